"""Waiting on many results (an ``all:`` fan-out, a big group) with a progress bar in a terminal.

``gather(result)`` returns the results in order, like ``GroupResult.get``; while it waits it
redraws one line on stderr when stderr is a terminal, and prints nothing at all otherwise (so
scripts and pipes get only the results)::

    from catdog.progress import gather
    rows = gather(run_on.delay("all", "uptime"), timeout=60)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from celery.exceptions import TimeoutError as CeleryTimeout

WIDTH = 30
POLL_S = 0.1


def _members(result: Any) -> list[Any]:
    if hasattr(result, "results"):  # GroupResult
        return list(result.results)
    if isinstance(result, Iterable):
        return list(result)
    return [result]


def bar(done: int, total: int, failed: int, elapsed: float) -> str:
    filled = WIDTH * done // total if total else WIDTH
    text = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total} in {elapsed:.1f}s"
    return text + (f", {failed} failed" if failed else "")


def gather(result: Any, timeout: float | None = None, propagate: bool = True,
           stream: TextIO | None = None, show: bool | None = None) -> list[Any]:
    """Every member's value, in order (an exception re-raised if ``propagate``)."""
    members = _members(result)
    stream = stream or sys.stderr
    show = stream.isatty() if show is None else show
    started = time.monotonic()
    drawn = ""
    pending, ready, failed = list(members), 0, 0
    while True:
        still = []
        for member in pending:  # ask only about the ones not done yet
            if member.ready():
                ready += 1
                failed += member.failed()
            else:
                still.append(member)
        pending = still
        elapsed = time.monotonic() - started
        if show:
            line = bar(ready, len(members), failed, elapsed)
            if line != drawn:
                stream.write("\r" + line)
                stream.flush()
                drawn = line
        if not pending:
            break
        if timeout is not None and elapsed > timeout:
            if show:
                stream.write("\n")
            raise CeleryTimeout(f"{len(pending)} of {len(members)} results not ready after "
                                f"{timeout:g}s")
        time.sleep(POLL_S)
    if show:
        stream.write("\n")
        stream.flush()
    return [m.get(propagate=propagate) for m in members]
