"""The Ray engine's set-up that needs no cluster: the install hint, and the engine name check."""

from __future__ import annotations

import pytest

from framefleet.errors import OptionError
from framefleet.settings import RayOptions


def test_without_ray_installed_the_ray_engine_says_how_to_install_it(monkeypatch):
    engines_ray = pytest.importorskip("framefleet.engines.ray")
    monkeypatch.setattr(engines_ray, "ray", None)  # as when the import of ray failed
    with pytest.raises(OptionError, match=r'pip install "framefleet\[ray\]"'):
        engines_ray.connect(RayOptions())


def test_an_unknown_engine_is_an_option_error():
    from framefleet.settings import RunSettings

    with pytest.raises(OptionError, match="--engine must be local, ray or inline"):
        RunSettings(engine="spark")


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "nowhere.invalid:6379"])
def test_a_ray_address_nothing_answers_on_is_one_error_line(address):
    engines_ray = pytest.importorskip("framefleet.engines.ray")
    if engines_ray.ray is None:
        pytest.skip("needs Ray")
    import socket

    with socket.socket() as closed:  # a port bound but not listening: refused
        closed.bind(("127.0.0.1", 0))
        address = address.format(port=closed.getsockname()[1])
        with pytest.raises(OptionError, match=r"^--ray-address .*: no Ray cluster answers there"):
            engines_ray.connect(RayOptions(address=address))
