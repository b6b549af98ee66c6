"""``fab logs`` of a real worker (real tmux piping its pane to the log file): plain text unless
``--color``, streamed plain with ``--follow``; a worker that runs as root because its device says
``allow_root: true`` says so once, in CatDog's words, without Celery's ``SecurityWarning``."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

import pytest

from ops.results import READY

from .conftest import IS_ROOT, device_spec
from .test_cli import BIN, ROOT, _env, fab

pytestmark = pytest.mark.slow
ROOT_NOTE = "device pa runs its worker as root (allow_root: true)"


def test_logs_read_as_plain_text_and_a_root_worker_says_so_once(make_fleet) -> None:
    fleet = make_fleet({"pa": device_spec([], concurrency=2)})  # prefork: said once, not per child
    assert [r.state for r in fleet.launch()] == [READY]
    log = fleet.folder / ".catdog" / "logs" / "pa.log"
    assert "\x1b[" in log.read_text()  # the worker's own colours, kept in its file

    shown = fab("logs", "--inventory", str(fleet.path), "--devices", "pa", "--lines", "500")
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\r" not in shown.stdout, shown.stdout
    assert "pa@" in shown.stdout and " ready." in shown.stdout and "[queues]" in shown.stdout
    assert "SecurityWarning" not in shown.stdout and "superuser" not in shown.stdout
    assert shown.stdout.count(ROOT_NOTE) == (1 if IS_ROOT else 0), shown.stdout
    coloured = fab("logs", "--inventory", str(fleet.path), "--devices", "pa", "--lines", "500",
                   "--color")
    assert coloured.returncode == 0 and "\x1b[1;36m" in coloured.stdout, coloured.stdout

    follow = subprocess.Popen([str(BIN / "fab"), "logs", "--inventory", str(fleet.path),
                               "--devices", "pa", "--lines", "500", "--follow"], cwd=ROOT,
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True)
    assert follow.stdout is not None
    streamed = b""
    try:
        deadline = time.monotonic() + 30
        while b" ready." not in streamed:
            assert time.monotonic() < deadline, streamed
            if select.select([follow.stdout], [], [], 0.5)[0]:
                streamed += os.read(follow.stdout.fileno(), 65536)
    finally:
        os.killpg(follow.pid, signal.SIGTERM)
        follow.wait(timeout=10)
    assert b"[queues]" in streamed and b"\x1b" not in streamed and b"\r" not in streamed, streamed
