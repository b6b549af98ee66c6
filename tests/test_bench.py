"""The benchmark harness runs (a smoke test: one short round, no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import launch
from bench.run import launch_table, main

pytestmark = pytest.mark.slow


def test_launch_benchmark_runs_and_reports(tmp_path: Path, capsys) -> None:
    found = launch.run(rounds=1, many=2)
    assert found["failures"] == []
    assert found["launch_1_s"]["n"] == 1 and found["launch_2_s"]["n"] == 1
    assert found["serve_to_ready_s"]["n"] == 3  # every fresh start measured
    assert found["worker_start_cpu_s"]["n"] == 3
    assert found["testbed"] in ("netns", "loopback")
    assert any("ratio 2/1" in line for line in launch_table(found))


def test_bench_cli_writes_results(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(launch, "run", lambda rounds: {
        "testbed": "netns", "rounds": rounds, "devices": 8, "cores": 2,
        "launch_1_s": {"median": 1.0, "min": 1.0, "max": 1.0, "n": 1},
        "launch_8_s": {"median": 2.0, "min": 2.0, "max": 2.0, "n": 1}, "ratio": 2.0,
        "serve_to_ready_s": {"median": 0.01, "min": 0.01, "max": 0.02, "n": 9},
        "worker_start_cpu_s": {"median": 0.4, "min": 0.4, "max": 0.4, "n": 9},
        "cpu_bound_s": 1.6, "failures": []})
    out = tmp_path / "results.json"
    assert main(["--quick", "--output", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["quick"] is True and written["launch"]["rounds"] == 2
    assert written["machine"]["cores"]
    assert "ratio 8/1                2.00" in capsys.readouterr().out
