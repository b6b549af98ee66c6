"""Ending a test's private tmux server for good: every pane's processes gone, socket file removed.

``tmux kill-server`` only hangs up on the panes; a worker dies when the kernel next runs it. On a
busy machine that can be after the next test has put its first tasks on the queues, and a dying
worker still blocked in ``BRPOP`` on ``catdog.any`` takes one of them with it (Redis pops the
message, the process never records it). So the next test starts only once the old workers are
gone. tmux also leaves the socket file behind; with a fresh socket name per fleet they pile up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from ops.embedded_redis import alive
from ops.tmux import Tmux
from workers.usage import tree as process_tree

__all__ = ["alive", "end_server", "pane_pids", "process_tree", "session_pids", "socket_path"]


def session_pids(pid: int) -> list[int]:
    """Every process in the session of ``pid`` (a tmux pane's process and all it started, even
    those its children left behind): what a power cut of that device would take down."""
    session = os.getsid(pid)
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == session:
                    pids.append(int(entry.name))
    return pids


def socket_path(socket: str) -> Path:
    """Where ``tmux -L socket`` keeps its socket (tmux's own rule: $TMUX_TMPDIR, else /tmp)."""
    return Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}" / socket


def pane_pids(socket: str) -> list[int]:
    """The process id of every pane on ``socket`` (none when no server runs there)."""
    return [pane.pid for pane in Tmux(socket).panes().values() if pane.pid]


def end_server(socket: str, timeout: float = 10.0) -> None:
    """Kill the server, wait until its panes' processes are gone (SIGKILL after ``timeout``)."""
    pids = [p for pane in pane_pids(socket) for p in process_tree(pane)]
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while [p for p in left if alive(p)] and time.monotonic() < deadline + 5:
        time.sleep(0.02)
    socket_path(socket).unlink(missing_ok=True)
