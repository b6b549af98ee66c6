"""The breaks themselves: a power cut of one device's worker (its whole process tree at once), and
a signal to many processes at once (the soak's kills and stops)."""

from __future__ import annotations

import contextlib
import os
import signal

from bench.tmuxserver import session_pids
from ops.session import session_name
from tests.conftest import FleetUnderTest


def worker_pids(fleet: FleetUnderTest, device: str) -> list[int]:
    """Every process of the device's worker: its tmux pane's process and all it started."""
    shown = fleet.tmux("list-panes", "-t", session_name(device), "-F", "#{pane_pid}")
    assert shown.returncode == 0, shown.stderr
    return session_pids(int(shown.stdout.split()[0]))


def power_cut(fleet: FleetUnderTest, device: str) -> list[int]:
    """SIGKILL the worker's whole process tree at once, as a power cut would."""
    pids = worker_pids(fleet, device)
    signal_all(pids, signal.SIGKILL)
    return pids


def signal_all(pids: list[int], signum: int) -> None:
    """Send ``signum`` to each process (one already gone is skipped)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
