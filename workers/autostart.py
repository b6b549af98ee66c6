"""``python -m workers.autostart SPEC``: what a device's systemd unit runs (``fab enable``).

It starts the device's worker exactly as ``fab launch`` does: the same tmux command (session
``catdog-<device>`` on the inventory's socket, the owner record, the log pipe, the worker's command
reading the mode-600 run files), all written by ``fab enable`` into ``SPEC``, a JSON file beside
the run files (:mod:`ops.autostart` writes it; this side only runs what it says, so the device
needs no Fabric). A live session already there (``fab launch`` started it) is adopted, a dead one
is removed first, as ``fab launch`` does.

Then it waits for the worker to answer (its heartbeat fresh in Redis), tells systemd it is ready
(``Type=notify``), and watches the session every few seconds:

- the session gone: someone stopped the worker on purpose (``fab stop``): exit 0, systemd leaves
  it stopped until the next boot;
- the pane dead (the worker died) and still there after :data:`STOP_GRACE_S` (``fab stop --force``
  removes it within that): exit 1 when its status was not 0, and systemd (``Restart=on-failure``)
  starts this again, which starts a new worker.

A spec without a device (a coordinator service: ``catdog-beat``, ``catdog-flower``) counts as
answering once its session has lived :data:`SERVICE_SETTLE_S`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLL_S = 1.0
WATCH_S = 2.0
STOP_GRACE_S = 6.0
SERVICE_SETTLE_S = 3.0
TMUX_TIMEOUT_S = 15.0


#: the session is another inventory's: the unit does not restart (``RestartPreventExitStatus``)
FOREIGN_STATUS = 2


class Foreign(Exception):
    """The session belongs to another inventory (:mod:`ops.ownership`)."""


@dataclass(frozen=True)
class PaneState:
    dead: bool
    status: int | None
    owner: str = ""


def log(text: str) -> None:
    """One line to the journal (systemd reads our stdout)."""
    print(f"catdog autostart: {text}", flush=True)


def notify(text: str) -> bool:
    """Tell systemd ``text`` (``READY=1``) on ``$NOTIFY_SOCKET``; False when there is none."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(text.encode())
    return True


def parse_state(name: str, output: str) -> PaneState | None:
    """The pane of ``name`` from the spec's ``query`` output (``name|dead|status|pid|owner``;
    the owner last, as a path may hold ``|``)."""
    fields = [*output.strip("\n").split("|", 4), "", "", "", ""]
    if fields[0] != name:
        return None
    return PaneState(fields[1] == "1", int(fields[2]) if fields[2].strip() else None, fields[4])


class Starter:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.session: str = spec["session"]
        self.device: str | None = spec.get("device")
        self.client: Any = None

    def _tmux(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, check=False,
                              timeout=TMUX_TIMEOUT_S, stdin=subprocess.DEVNULL)

    def pane(self) -> PaneState | None:
        done = self._tmux(self.spec["query"])
        return parse_state(self.session, done.stdout) if done.returncode == 0 else None

    def connect(self) -> None:
        env_file = self.spec.get("env_file")
        if not env_file or self.device is None:
            return
        from catdog import broker
        from workers.cli import load_env_file

        load_env_file(Path(env_file))
        url = os.environ.get("CATDOG_BROKER_URL")
        self.client = broker.connect(url) if url else None

    def answers(self, since: float) -> bool:
        """Whether the worker (service) answers: its heartbeat fresh in Redis."""
        if self.device is None:
            return time.time() - since >= SERVICE_SETTLE_S
        if self.client is None:
            return False
        import redis

        from catdog.records import Heartbeat, heartbeat_key

        try:
            raw = self.client.get(heartbeat_key(self.device))
        except redis.RedisError:
            return False
        return bool(raw) and Heartbeat.loads(raw).is_fresh(time.time())

    def start(self) -> bool:
        """Start the session (a dead one removed first); False when it could not be started."""
        pane = self.pane()
        owner = self.spec.get("owner")
        if pane is not None and owner and pane.owner and pane.owner != owner:
            log(f"session {self.session} belongs to {pane.owner}, not {owner}: left alone "
                f"(stop it there, or give this inventory its own `tmux_socket:`)")
            raise Foreign
        if pane is not None and pane.dead:
            log(f"session {self.session} holds a dead worker (status {pane.status}): removed")
            self._tmux(self.spec["kill"])
            pane = None
        if pane is not None:
            log(f"session {self.session} already runs (fab launch started it): watching it")
            return True
        if self.client is not None and self.device is not None:
            from catdog.records import heartbeat_key, ready_key

            with contextlib.suppress(Exception):  # the broker may be down: the worker waits
                self.client.delete(ready_key(self.device), heartbeat_key(self.device))
        done = self._tmux(self.spec["start"])
        if done.returncode != 0 and "duplicate session" not in done.stderr:
            log(f"tmux could not start session {self.session}: "
                f"{(done.stderr or done.stdout).strip()}")
            return False
        log(f"started session {self.session}")
        return True

    def run(self) -> int:
        self.connect()
        try:
            if not self.start():
                return 1
        except Foreign:
            return FOREIGN_STATUS
        since, answered = time.time(), False
        while True:
            pane = self.pane()
            if pane is None:
                log(f"session {self.session} ended (stopped on purpose): not restarting")
                return 0
            if pane.dead:
                return self.died(pane)
            if not answered and self.answers(since):
                answered = True
                notify("READY=1")
                log(f"{self.device or self.session} answers "
                    f"({time.time() - since:.1f}s after start)")
            time.sleep(WATCH_S if answered else POLL_S)

    def died(self, pane: PaneState) -> int:
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.pane()
            if now is None:
                log(f"session {self.session} ended (stopped on purpose): not restarting")
                return 0
            pane = now if now.status is not None else pane  # tmux records it a moment later
        if pane.status == 0:
            log(f"{self.session}: the worker exited with status 0: not restarting")
            return 0
        shown = "killed by a signal" if pane.status is None else f"status {pane.status}"
        log(f"{self.session}: the worker died ({shown}): systemd restarts it")
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m workers.autostart SPEC.json (written by `fab enable`)",
              file=sys.stderr)
        return 2
    try:
        spec = json.loads(Path(args[0]).read_text())
    except (OSError, ValueError) as exc:
        print(f"catdog autostart: cannot read {args[0]}: {exc}; run `fab enable` again",
              file=sys.stderr)
        return 2
    from catdog import edge

    return edge.run("catdog autostart", lambda: Starter(spec).run())


if __name__ == "__main__":
    sys.exit(main())
