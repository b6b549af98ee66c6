"""Task metrics: line protocol checked with a parser we did not write (line-protocol-parser), and
``fab metrics`` gathering real workers' lines, failures included."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import line_protocol_parser as lpp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from catdog.lineprotocol import line
from catdog.tasks.examples import sleep
from ops import api
from ops.results import READY

from .conftest import device_spec

NAME = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="\\"),
               min_size=1, max_size=12)
TAG = st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="\\"),
              min_size=1, max_size=12).filter(lambda t: t.strip() == t)
TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


# (subnormal floats are left out: this parser cannot read them; durations never are)
REAL = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False)
MEASUREMENT = NAME.filter(lambda m: not m.startswith("#"))


@given(measurement=MEASUREMENT, tags=st.dictionaries(NAME, TAG, max_size=3),
       number=st.integers(-10**12, 10**12), real=REAL, text=TEXT, flag=st.booleans(),
       when=st.integers(0, 2**62))
def test_any_point_reads_back_the_same(measurement: str, tags: dict[str, str], number: int,
                                       real: float, text: str, flag: bool, when: int) -> None:
    written = line(measurement, tags, {"n": number, "x": real, "s": text, "ok": flag}, when)
    parsed = lpp.parse_line(written)
    assert parsed["measurement"] == measurement
    assert parsed["tags"] == tags
    assert parsed["fields"] == {"n": number, "x": real, "s": text, "ok": flag}
    assert parsed["time"] == when


def test_a_point_needs_a_field_and_a_measurement_that_is_not_a_comment() -> None:
    with pytest.raises(ValueError, match="at least one field"):
        line("m", {"a": "b"}, {"x": None}, 1)
    with pytest.raises(ValueError, match="comment"):
        line("#m", {}, {"x": 1}, 1)


@pytest.mark.slow
def test_fab_metrics_gathers_every_task_with_failures_and_minute_summaries(make_fleet) -> None:
    fleet = make_fleet({"pa": device_spec([], concurrency=2),
                        "pb": device_spec([], pool="threads", concurrency=2)})
    assert [r.state for r in fleet.launch()] == [READY, READY]
    for device in ("pa", "pb"):
        for _ in range(3):
            sleep.on(device).delay(0.01).get(timeout=20)
        with pytest.raises(ValueError):
            sleep.on(device).delay("not a number").get(timeout=20)
    found = api.metrics(str(fleet.path), since_s=3600)
    assert found.ok and list(found) == ["pa", "pb"]
    for device in ("pa", "pb"):
        points = [lpp.parse_line(text) for text in
                  (fleet.folder / "metrics" / f"{device}.lp").read_text().splitlines()]
        tasks = [p for p in points if p["measurement"] == "catdog_task"]
        states = sorted(p["tags"]["state"] for p in tasks)
        assert states == ["FAILURE", "SUCCESS", "SUCCESS", "SUCCESS"], states
        assert {p["tags"]["device"] for p in tasks} == {device}
        assert {p["tags"]["task"] for p in tasks} == {"tasks.examples.sleep"}
        assert all(p["fields"]["duration_s"] >= 0 and p["fields"]["wait_s"] >= 0 for p in tasks)
        assert len({p["fields"]["id"] for p in tasks}) == 4
        minutes = [p for p in points if p["measurement"] == "catdog_minute"]
        assert sum(p["fields"]["succeeded"] for p in minutes) == 3
        assert sum(p["fields"]["failed"] for p in minutes) == 1
        assert all(p["time"] % (60 * 10**9) == 0 for p in minutes)
    assert "4 task lines" in found["pa"].reason


def _task_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    points = [lpp.parse_line(text) for text in path.read_text().splitlines()]
    return [p for p in points if p["measurement"] == "catdog_task"]


@pytest.mark.slow
def test_every_orderly_exit_writes_the_metrics_it_holds(make_fleet) -> None:
    """A warm `fab stop` (SIGTERM), `fab restart` and Ctrl-C in the worker's pane each write
    the tasks the worker held, whatever its pool."""
    fleet = make_fleet({"pa": device_spec([], concurrency=2),
                        "pb": device_spec([], pool="solo"),
                        "pc": device_spec([], pool="threads", concurrency=2)})
    assert [r.state for r in fleet.launch()] == [READY] * 3
    ids: dict[str, set[str]] = {}
    for device in ("pa", "pb", "pc"):
        results = [sleep.on(device).delay(0.01) for _ in range(3)]
        for r in results:
            r.get(timeout=20)
        ids[device] = {r.id for r in results}
    folder = fleet.folder / ".catdog" / "metrics"
    assert all(_task_lines(folder / f"{d}.lp") == [] for d in ids)  # still buffered

    assert [r.state for r in fleet.stop(["pa"])] == ["STOPPED"]
    assert [r.state for r in api.restart(str(fleet.path), "pb").values()] == [READY]
    fleet.tmux("send-keys", "-t", "=catdog-pc:", "C-c")
    deadline = time.monotonic() + 30
    pane = ("display-message", "-p", "-t", "=catdog-pc:", "#{pane_dead}")
    while fleet.tmux(*pane).stdout.strip() != "1":
        assert time.monotonic() < deadline, fleet.tmux("capture-pane", "-p", "-t",
                                                       "=catdog-pc:").stdout
        time.sleep(0.05)

    for device, sent in ids.items():
        lines = _task_lines(folder / f"{device}.lp")
        assert sorted(p["fields"]["id"] for p in lines) == sorted(sent), (device, lines)
        assert {p["tags"]["state"] for p in lines} == {"SUCCESS"}
        assert {p["tags"]["device"] for p in lines} == {device}
