"""The benchmark harness runs (a smoke test: one short round, no timing asserted).

It runs as its own process, as a user runs it: the harness points its app at the broker of the
fleet it builds, which must not leak into the other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import launch
from bench.run import main

from .conftest import ROOT
from .test_cli import _env

pytestmark = pytest.mark.slow


def test_launch_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--rounds", "1", "--devices", "2",
                           "--quick", "--tasks", "40", "--calls", "10", "--pools", "solo",
                           "--output", str(out)], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(out.read_text())["launch"]
    assert found["failures"] == []
    assert found["launch_1_s"]["n"] == 1 and found["launch_2_s"]["n"] == 1
    assert found["serve_to_ready_s"]["n"] == 3  # every fresh start measured
    assert found["worker_start_cpu_s"]["n"] == 3
    assert found["testbed"] in ("netns", "loopback")
    assert "ratio 2/1" in done.stdout and "launch 2 devices" in done.stdout
    timed = json.loads(out.read_text())["status"]
    assert timed["failures"] == [] and timed["states"] == ["idle"] and timed["samples"] == 50
    assert "fab status for 2 live devices" in done.stdout
    _check_comparison(json.loads(out.read_text()), done.stdout)


def _check_comparison(found: dict, table: str) -> None:
    """Both sides measured once, every ratio reported; the fan-out's messages left in one round
    trip (a count, not a timing); the kill switch held tasks back and let them go."""
    solo = found["compare_solo"]
    assert (solo["pool"], solo["concurrency"], solo["tasks"], solo["calls"]) == ("solo", 1, 40, 10)
    for key in ("tasks_per_s", "p50", "p95", "p99", "rss_mb", "pss_mb", "commands_per_task",
                "producer_cpu_us"):
        assert solo[key]["catdog"]["n"] == solo[key]["plain"]["n"] == 1, key
        assert solo[key]["ratio"] > 0, key
    # 40 tasks can take less than a clock tick (10 ms) of a worker's CPU: no ratio then
    assert solo["worker_cpu_us"]["catdog"]["n"] == solo["worker_cpu_us"]["plain"]["n"] == 1
    # a send, a fetch, a subscription, a result stored and an ack: a command each at least
    assert solo["commands_per_task"]["catdog"]["median"] >= 5
    fanout = found["fanout"]
    assert fanout["devices"] == fanout["messages"] == 2
    assert fanout["writes"]["catdog"]["median"] == 1
    assert fanout["writes"]["plain"]["median"] == 2  # one LPUSH per apply_async
    assert fanout["subscriptions"]["catdog"]["median"] == 2  # one per member, as apply_async
    assert fanout["total_ms"]["ratio"] > 0
    switch = found["killswitch"]
    assert switch["failures"] == [] and switch["on_to_last_start_s"]["n"] == 1
    assert switch["off_to_first_start_s"]["n"] == 1
    for label in ("throughput (tasks/s) solo -c1", "fan-out to 2: broker round trips",
                  "--off returned -> first start"):
        assert label in table


def test_bench_cli_writes_results(tmp_path: Path, capsys, monkeypatch) -> None:
    summary = {"median": 1.0, "min": 1.0, "max": 1.0, "n": 1}

    def fake_run(rounds: int, many: int) -> dict:
        found: dict = {"testbed": "netns", "rounds": rounds, "devices": many, "cores": 2,
                       "sizes": [1, 2, many], "ratio": 2.0, "serve_to_ready_s": summary,
                       "worker_start_cpu_s": summary, "cpu_bound_s": 1.6, "failures": []}
        for n in (1, 2, many):
            found.update({f"launch_{n}_s": summary, f"ratio_{n}": 1.0,
                          f"coordinator_cpu_{n}_s": summary, f"machine_busy_{n}": summary})
        return found

    monkeypatch.setattr(launch, "run", fake_run)
    monkeypatch.setattr("bench.run.isolated", lambda benchmark, *args: benchmark(*args))
    out = tmp_path / "results.json"
    assert main(["--quick", "--only", "launch", "--output", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["quick"] is True and written["launch"]["rounds"] == 2
    assert written["machine"]["cores"]
    ratio = next(ln for ln in capsys.readouterr().out.splitlines() if "ratio 8/1" in ln)
    assert ratio.split()[2:4] == ["2.00", "(goal"]


def _entry(mine: float, theirs: float) -> dict:
    """One compared measure, each side measured once."""
    return {"catdog": {"median": mine, "min": mine, "max": mine, "n": 1},
            "plain": {"median": theirs, "min": theirs, "max": theirs, "n": 1},
            "ratio": round(mine / theirs, 3)}


def test_comparison_rows_show_ratios_and_goals() -> None:
    from bench.report import profile_rows

    rows = profile_rows({"pool": "solo", "concurrency": 1, "tasks_per_s": _entry(90, 100),
                         "p50": _entry(1.0, 2.0), "rss_mb": _entry(61, 57)}, pi_zero=True)
    assert [r.split()[-1] for r in rows] == ["MISSED", "met", "MISSED"]
    assert "0.90" in rows[0] and "0.50" in rows[1] and "CatDog <= 60 MB" in rows[2]


def test_markdown_tables_come_from_the_results_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    assert main(["--markdown", "--output", str(out)]) == 2  # nothing measured yet
    assert "run python -m bench first" in capsys.readouterr().err
    out.write_text(json.dumps({
        "machine": {"cpu": "Z80", "cores": 2, "python": "3.11", "system": "Linux"},
        "when": "2026-11-24", "compare_solo": {"tasks_per_s": _entry(105, 100),
                                               "rss_mb": _entry(61, 57)},
        "compare_solo_same_settings": {"p50": _entry(2.2, 2.0)},
        "fanout": {"devices": 8, "writes": _entry(1, 8)},
        "status": {"devices": 8, "median_ms": 2.5, "p95_ms": 3.0, "max_ms": 60.0}}))
    assert main(["--markdown", "--output", str(out)]) == 0
    table = capsys.readouterr().out
    assert "on Z80, 2 cores" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert "| throughput (tasks/s), solo | 105 (105-105) | 100 (100-100) | 1.05 | ratio >= 1.0 " \
           "| met |" in rows
    assert any(r.startswith("| idle RSS per worker (MB), solo") and r.endswith("| CatDog <= 60 MB "
                                                                              "| **missed** |")
               for r in rows)
    assert any(r.startswith("| round trip p50 (ms), solo") and "| 1.10 |" in r for r in rows)
    assert "| fan-out to 8: broker round trips | 1 (1-1) | 8 (8-8) | 0.12 | 1 round trip | met |" \
           in rows
    assert any(r.startswith("| `fab status`, 8 devices") and r.endswith("**missed** |")
               for r in rows)
    assert "only the layer differs" in table



def test_markdown_page_gets_the_tables_between_its_comments(tmp_path: Path, capsys) -> None:
    """``--page docs/performance.md``: the block between the two comments is replaced, the rest
    of the page kept; a page without them is refused, unchanged."""
    from bench.markdown import END, START, render

    out = tmp_path / "results.json"
    results = {"machine": {"cpu": "Z80", "cores": 2, "python": "3.11", "system": "Linux"},
               "when": "2026-11-24", "fanout": {"devices": 8, "writes": _entry(1, 8)}}
    out.write_text(json.dumps(results))
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n\nintro\n\n{START}\nold tables\n{END}\n\nafter\n")
    assert main(["--markdown", "--output", str(out), "--page", str(page)]) == 0
    assert capsys.readouterr().out == ""
    assert page.read_text() == (f"# Performance\n\nintro\n\n{START}\n{render(results)}\n{END}"
                                f"\n\nafter\n")
    bare = tmp_path / "bare.md"
    bare.write_text("# no block\n")
    assert main(["--markdown", "--output", str(out), "--page", str(bare)]) == 2
    assert "no <!-- bench markdown tables: start -->" in capsys.readouterr().err
    assert bare.read_text() == "# no block\n"

def _measured(n: int) -> dict[str, int]:
    return {"n": n, "pid": os.getpid()}


def _broken() -> dict[str, int]:
    raise ValueError("no fleet here")


def _slow_to_exit(marker: str) -> dict[str, int]:
    """A benchmark whose process has exit work to do after it sent its results (as logging's
    shutdown, or a fleet's cleanup registered with atexit)."""
    import atexit
    import time

    def finish() -> None:
        time.sleep(0.5)
        Path(marker).write_text("exited cleanly")

    atexit.register(finish)
    return {"pid": os.getpid()}


def test_each_benchmark_runs_in_its_own_process_and_its_failure_is_reported(tmp_path: Path
                                                                             ) -> None:
    from bench.run import isolated

    found = isolated(_measured, 7)
    assert found["n"] == 7 and found["pid"] != os.getpid()
    marker = tmp_path / "exit"
    isolated(_slow_to_exit, str(marker))  # its exit is not cut short by a SIGTERM
    assert marker.read_text() == "exited cleanly"
    with pytest.raises(RuntimeError, match=r"(?s)_broken failed:.*ValueError: no fleet here"):
        isolated(_broken)


#: what the coordinator install does not have (pytest, hypothesis) and what the benchmarks must
#: never reach for: the tests
NOT_IN_THE_COORDINATOR_INSTALL = ("pytest", "_pytest", "hypothesis", "tests")

BLOCKER = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_IN_THE_COORDINATOR_INSTALL!r}:
            raise ImportError("not in the coordinator install: " + name)
sys.meta_path.insert(0, Block())
"""

BEDS = """
import importlib, pkgutil, bench
from bench.testbed import local_fleet, ssh_fleet
for found in pkgutil.iter_modules(bench.__path__):
    if found.name != "__main__":
        importlib.import_module("bench." + found.name)
with local_fleet(1) as bed:
    print(bed.kind, sorted(bed.inventory.devices))
with ssh_fleet(1) as bed:
    print(bed.kind, sorted(bed.inventory.devices))
"""


def test_the_benchmarks_run_with_the_coordinator_extra_alone(tmp_path: Path) -> None:
    """Every process of the harness (its benchmarks run in spawned children) starts with pytest,
    hypothesis and the tests unimportable, as in a coordinator install: a ``sitecustomize``."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = _env(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proof = subprocess.run([sys.executable, "-c", "import pytest"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=False)
    assert "not in the coordinator install: pytest" in proof.stderr  # the blocker is in force
    helped = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0 and "--quick" in helped.stdout, helped.stderr
    beds = subprocess.run([sys.executable, "-c", BEDS], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert beds.returncode == 0, beds.stderr
    lines = beds.stdout.splitlines()
    assert lines[0] == "local ['d1']" and lines[1] in ("netns ['d1']", "loopback ['d1']"), lines


def test_no_benchmark_module_imports_the_tests() -> None:
    """Read from each module's syntax tree, so an import inside a function counts too."""
    import ast

    found = {}
    for module in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            found.update({f"{module.name}: {n}": n for n in names})
    assert len(found) > 50  # the walk saw the modules' imports
    assert [k for k, n in found.items() if n.split(".")[0] in NOT_IN_THE_COORDINATOR_INSTALL] == []


def test_offline_benchmark_cuts_a_worker_and_hears_every_monitor(tmp_path: Path) -> None:
    """``python -m bench.offline``: one power cut of an SSH device, and each of the three
    monitors (``fab status``, Celery's event state, Flower) counted it offline afterwards."""
    out = tmp_path / "offline.json"
    done = subprocess.run([sys.executable, "-m", "bench.offline", "--runs", "1", "--kinds", "ssh",
                           "--output", str(out)], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(out.read_text())["ssh"]
    assert found["bed"] in ("netns", "loopback") and found["runs"] == 1
    seen = found["offline_after_kill_s"]
    assert sorted(seen) == ["celery events", "fab status", "flower"]
    for monitor, got in seen.items():
        assert got["n"] == 1 and got["each"][0] > 0, monitor  # offline only after the cut
        assert monitor in done.stdout


def test_field_profile_runs_and_counts(tmp_path: Path) -> None:
    """``python -m bench --profile field``, tiny: Pi-sized devices behind the delaying proxy.
    Counts, not times: every size and link measured on both sides, the fan-out's one round trip,
    100 rows of ``fab status``, the idle workers' commands by name, and no cgroup left behind."""
    from bench.cgroups import CPU_ROOT, MEMORY_ROOT

    out = tmp_path / "field.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--profile", "field", "--sizes", "1,2",
                           "--links", "0,10", "--calls", "4", "--tasks", "3", "--fanouts", "2",
                           "--idle-window", "2", "--output", str(out)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(out.read_text())
    assert found["failures"] == [] and found["sizes"] == [1, 2]
    assert found["quota"] == {"period_us": 10_000, "quota_us": 1250, "memory_mb": 512}
    assert found["link"]["proxy_cost_ms"] is not None and found["link"]["10"]["p50"] > 0
    for size in (1, 2):
        for link in ("0", "10"):
            per = found[f"size_{size}"][f"link_{link}"]
            for side in ("catdog", "plain"):
                assert per[side]["p50"] > 0 and per[side]["tasks_per_s"] > 0, (size, link, side)
                assert per[side]["commands_per_task"] >= 5  # send, fetch, result, ack at least
            assert per["ratios"]["p50"] > 0
    wide = found["size_2"]["link_10"]
    assert wide["catdog"]["fanout_writes"]["median"] == 1  # one pipelined round trip
    assert wide["plain"]["fanout_writes"]["median"] == 2  # one LPUSH per apply_async
    assert wide["catdog"]["fanout_subscriptions"]["median"] == 2
    status = found["size_2"]["status"]
    assert status["devices"] == 100 and status["direct"]["rows"] == status["lan"]["rows"] == 100
    assert found["size_1"]["serve_to_ready_s"]["n"] == 1
    assert found["size_2"]["serve_to_ready_s"]["n"] == 2
    for side in ("catdog", "plain"):
        idle = found["idle"][side]
        # plain Celery's idle worker fetches with a 1 s BRPOP; CatDog's waits 10 s at a time (its
        # inbox and bells), longer than this window, and beats (SET) every 2 s
        counted = "brpop" if side == "plain" else "set"
        assert idle["by_command_per_s"][counted] > 0 and idle["rss_mb"] > 20, side
        assert "brpop" not in idle["by_command_per_s"] or side == "plain", "kombu's fetch"
    assert "round trip p50 / floor" in done.stdout and "Redis commands / s" in done.stdout
    assert "launch 2 / launch 1" in done.stdout
    assert not [p for root in (CPU_ROOT, MEMORY_ROOT) for p in root.glob("catdog-field-*")]
