"""The spot soak's quick mode (benchmarks/spot_soak.py) as a test: a Ray job on a loopback cluster whose nodes
get Azure preemption notices and are killed, with and without notice, ends with every video once,
frame-exact, and no preempted or lost attempt charged against --max-attempts 1."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from spot_soak import QUICK, SoakConfig, soak

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_preemptions_with_and_without_notice_lose_duplicate_and_fail_nothing(tmp_path):
    videos, announced, kills = QUICK
    result = soak(tmp_path, SoakConfig(videos=videos, announced=announced, kills=kills))
    # Injecting stops when the job ends; the plan begins announced, announced, kill.
    assert result["injected"]["announced"] >= 1 and result["injected"]["kill"] >= 1
    assert not result["errors"] and not result["stalled"] and result["exit_codes"] == [0]
    assert result["lost"] == [] and result["duplicated"] == 0 and result["stray"] == []
    assert result["wrong"] == [] and result["not_done"] == []
    # A notice's segment finishes when it fits (the usual case here) or is given back as `preempted`: either
    # way nothing is charged
    assert result["charged_input_failures"] == 0 and result["charged_crashes"] == 0
