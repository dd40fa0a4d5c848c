"""The package's structure: no import cycles between framefleet's modules, and the settings light to import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import framefleet

PACKAGE = Path(framefleet.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts))}


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The framefleet modules `path` imports, at import time or inside its functions (a deferred import is
    still a dependency), leaving out `if TYPE_CHECKING:` blocks. An import of a module runs its packages
    too, and `from package import name` needs the package's own `__init__` to have run."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test).endswith("TYPE_CHECKING") for node in ast.walk(block)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            targets = [name for name in submodules if name in modules]
            if len(targets) < len(submodules):
                targets.append(node.module)
        for name in targets:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            found.add(name)
            found.update(_ancestors(name))
    return found


def import_graph() -> dict[str, set[str]]:
    """framefleet module -> the framefleet modules it imports. A module's own packages are left out where it
    only imports their submodules: they are always imported before it."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        imported = _imports(path, modules)
        named = {node.module for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module in modules
                 and any(f"{node.module}.{alias.name}" not in modules for alias in node.names)}
        graph[name] = imported - {name} - (_ancestors(name) - named)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_framefleet_modules() -> None:
    graph = import_graph()
    assert "framefleet.jobs.store" in graph["framefleet.engines.scheduler"]  # the graph sees real imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_settings_and_the_spec_import_without_pyav_or_a_model_runtime() -> None:
    script = ("import sys\nfrom framefleet.settings import RunSettings\nimport framefleet\n"
              "RunSettings().to_json()\n"
              "print(sorted(m for m in ('av', 'onnxruntime', 'openvino', 'numpy', 'framefleet.jobs.store') "
              "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_every_public_name_is_exported_and_importable() -> None:
    assert set(framefleet.__all__) == set(framefleet._MODULE_OF) | {"__version__"}
    for name in framefleet.__all__:
        assert getattr(framefleet, name) is not None


def test_the_run_flags_are_declared_once_for_every_setting_given_takes() -> None:
    from framefleet.cli.options import RUN_FLAGS
    from framefleet.settings import RUN_FLAG_NAMES, RunSettings

    assert set(RUN_FLAGS) <= RUN_FLAG_NAMES  # the rest (poll_seconds, ...) are for programs and service files
    samples = {"engine": "ray", "parts_dir": "az://scratch/job", "worker_network": "off", "remote_read": "spool",
               "ray_address": "auto"}
    for name in RUN_FLAG_NAMES:
        value = samples.get(name, 7)
        assert RunSettings().given(**{name: value}) != RunSettings(), name
        assert RunSettings().given(**{name: None}) == RunSettings(), name


def test_the_command_line_loads_no_pyav_model_runtime_or_job_machinery_until_a_command_needs_them() -> None:
    script = ("import sys\nimport framefleet.cli\n"
              "print(sorted(m for m in ('av', 'numpy', 'cv2', 'onnxruntime', 'fsspec', 'framefleet.pipeline', "
              "'framefleet.jobs.run', 'framefleet.plan') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_openvino_starts_without_its_model_conversion_tools_which_still_import_when_asked_for() -> None:
    pytest.importorskip("openvino")
    script = ("import sys\nfrom framefleet.ops.runtimes import ov_core\nov_core()\n"
              "print('openvino.tools.ovc' in sys.modules)\n"
              "from openvino.tools.ovc import convert_model\nprint(callable(convert_model))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.split() == ["False", "True"]
