"""The worker's output file rotates (real tmux piping into the real awk program)."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from ops.logfile import plain, plain_filter, rotating_append
from ops.tmux import Tmux

from .tmuxserver import end_server


def test_output_piped_by_tmux_rotates_and_keeps_the_newest_lines(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "dev.log"
    log.parent.mkdir()
    log.write_text("from an earlier run\n" * 5)  # counted: rotation looks at the existing size
    tmux = Tmux(f"catdog-test-{uuid.uuid4().hex[:8]}")
    try:
        command = ["sh", "-c", "for i in $(seq 1 60); do echo \"line $i of the worker\"; done"]
        assert tmux.new_session("w", command, str(tmp_path),
                                pipe=rotating_append(str(log), max_bytes=400, backups=2))
        deadline = time.monotonic() + 10
        while "line 60 " not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, sorted(p.name for p in log.parent.iterdir())
            time.sleep(0.05)
    finally:
        end_server(tmux.socket)
    names = sorted(p.name for p in log.parent.iterdir())
    assert names == ["dev.log", "dev.log.1", "dev.log.2"]  # two backups kept, older ones gone
    assert all(p.stat().st_size <= 400 + 40 for p in log.parent.iterdir())
    kept = (log.parent / "dev.log.2").read_text() + (log.parent / "dev.log.1").read_text() \
        + log.read_text()
    numbers = [int(line.split()[1]) for line in kept.splitlines() if line.startswith("line ")]
    assert numbers == list(range(numbers[0], 61))  # the newest lines, in order, none lost between


SAMPLE = ("\x1b[1;33m[09:00: WARNING/MainProcess] device pa runs its worker as root\x1b[0m\r\n"
          "\x1b]0;title\x07\x1b(B\x1b[?25l -------------- pa@vm v5.7.0\r\n"
          "plain line, [brackets] and a lone ] stay\r\n")
PLAIN = ("[09:00: WARNING/MainProcess] device pa runs its worker as root\n"
         " -------------- pa@vm v5.7.0\n"
         "plain line, [brackets] and a lone ] stay\n")


def test_plain_text_in_python_and_on_the_device_alike() -> None:
    """``fab logs`` makes a log plain with :func:`plain` (what it read) or, for ``--follow``,
    with the awk filter run on the device: both give the same text."""
    assert plain(SAMPLE) == PLAIN
    done = subprocess.run(["sh", "-c", plain_filter()], input=SAMPLE.encode(),
                          capture_output=True, check=True)
    assert done.stdout.decode() == PLAIN
