"""Counting what a break did: tasks sent, completed, run twice, lost.

Every chaos test sends probe tasks (``tests/probe.py``: each start is recorded in Redis with the
device it ran on), breaks something real, and settles the books with :func:`settle`. The counts
are printed and appended to ``artifacts/chaos.jsonl`` for the note (:meth:`Tally.report`).
"""

from __future__ import annotations

import collections
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import redis

from tests.probe import starts

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@dataclass
class Tally:
    test: str
    sent: int
    completed: int
    duplicates: int
    lost: int
    notes: dict[str, Any] = field(default_factory=dict)

    def report(self, stream: TextIO | None = None) -> Tally:
        """Print the counts (on ``stream``, default stdout) and append them to the artifacts."""
        print(self, file=stream or sys.stdout)
        ARTIFACTS.mkdir(exist_ok=True)
        with (ARTIFACTS / "chaos.jsonl").open("a") as f:
            f.write(json.dumps(self.as_dict()) + "\n")
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        extra = "".join(f", {k} {v}" for k, v in self.notes.items())
        return (f"{self.test}: sent {self.sent}, completed {self.completed}, "
                f"duplicates {self.duplicates}, lost {self.lost}{extra}")


def tally_of(test: str, done: dict[str, Any], runs: list[tuple[int, float, str]],
             **notes: Any) -> Tally:
    """The books from a producer's ``get`` (number -> True, or what happened instead) and the
    recorded starts."""
    runs_of = collections.Counter(n for n, _, _ in runs)
    completed = sum(v is True for v in done.values())
    failed = {n: v for n, v in done.items() if v is not True}
    if failed:
        notes["not_completed"] = dict(list(failed.items())[:3])
    return Tally(test, len(done), completed, sum(c - 1 for c in runs_of.values() if c > 1),
                 len(done) - completed, notes)


def settle(test: str, results: dict[int, Any], client: redis.Redis, module: str,
           timeout: float, **notes: Any) -> Tally:
    """Wait up to ``timeout`` seconds for every result; count the tasks that never completed
    (lost) and the extra starts (duplicates)."""
    deadline = time.monotonic() + timeout
    completed = 0
    for n, result in results.items():
        try:
            assert result.get(timeout=max(0.1, deadline - time.monotonic())) == n
        except Exception:  # a task that did not complete (failed or timed out) is counted lost
            continue
        completed += 1
    runs = collections.Counter(n for n, _, _ in starts(client, module))
    return Tally(test, len(results), completed,
                 sum(c - 1 for n, c in runs.items() if n in results and c > 1),
                 len(results) - completed, notes)
