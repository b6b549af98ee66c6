"""``fab launch``: start each device's worker in tmux and call it READY only once it answers.

Per device, in parallel: an existing live session is checked (ALREADY RUNNING when its worker
answers a ping); otherwise the worker starts in tmux session ``catdog-<device>``. The launcher then
waits on the worker's ready record in Redis (a blocking pop, no fixed sleeps), pings the node by
name, and reports READY. A worker that dies on start is reported FAILED with its exit status and
its last output lines, which tmux keeps because the pane remains after exit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from catdog.context import FleetContext
from catdog.errors import UsageError
from catdog.inventory import Device
from catdog.records import exit_status_from, heartbeat_key, ready_key
from ops.fanout import EventCallback, on_each, quiet
from ops.lan_broker import device_url
from ops.pinging import ping
from ops.results import ALREADY_RUNNING, FAILED, READY, DeviceResult
from ops.session import WorkerSession, run_env
from ops.tmux import Pane

DEFAULT_TIMEOUT_S = 30.0
#: a ping addressed to one node returns as soon as it replies; a short timeout only bounds the
#: wait when the worker's control channel is not listening yet (then the next try catches it)
PING_TIMEOUT_S = 0.5
#: how long one wait for the ready record lasts before the launcher looks at the pane again (a
#: worker that dies on start is seen within this; each look is a round trip to the device)
ANNOUNCE_WAIT_S = 1.0
OUTPUT_LINES = 30
LOGLEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def check_loglevel(loglevel: str) -> str:
    """A worker log level, upper-cased, or a UsageError naming the choices."""
    if loglevel.upper() not in LOGLEVELS:
        raise UsageError(f"--loglevel {loglevel!r} is not a log level: choose one of "
                         f"{', '.join(LOGLEVELS)} (DEBUG adds a line per task)")
    return loglevel.upper()


class Launcher:
    """Launches devices of the fleet ``context`` (its inventory, broker and app)."""

    def __init__(self, context: FleetContext, *,
                 timeout: float = DEFAULT_TIMEOUT_S, on_event: EventCallback | None = None,
                 loglevel: str | None = None) -> None:
        self.context = context
        self.inventory = context.inventory
        self.loglevel = check_loglevel(loglevel) if loglevel else None
        self.broker_url = context.url
        self.timeout = timeout
        self.on_event = on_event or quiet
        self.redis = context.redis()

    def launch(self, devices: Sequence[Device]) -> list[DeviceResult]:
        """Launch ``devices`` in parallel; one result per device, in the order given."""
        return on_each(self.inventory, devices, self._launch, self.on_event)

    def _launch(self, session: WorkerSession, started: float) -> DeviceResult:
        device = session.device
        pane, has_python = session.prepare()
        if clash := session.clash(pane):
            return DeviceResult(device.name, FAILED, clash)
        if pane is not None and not pane.dead:
            return self._await(session, started, ALREADY_RUNNING, owned=False)
        python = session.python
        if not has_python:
            return DeviceResult(device.name, FAILED,
                                f"python {python} not found or not executable on {device.name}; "
                                f"fix devices.{device.name}.python in {self.inventory.path.name}"
                                + ("" if device.is_local else " or run `fab deploy`"))
        if pane is not None:  # a worker that died earlier: start afresh
            session.kill()
        self.redis.delete(ready_key(device.name), heartbeat_key(device.name))
        self.on_event(device.name, "starting", "")
        if not session.start(self._command(session)):  # another command started it meanwhile
            if clash := session.clash(session.pane()):
                return DeviceResult(device.name, FAILED, clash)
            return self._await(session, started, ALREADY_RUNNING, owned=False)
        return self._await(session, started, READY, owned=True)

    def _command(self, session: WorkerSession) -> list[str]:
        """The worker's command; the broker URL goes in a mode-600 file, never on a command line."""
        url = device_url(self.inventory, session, self.broker_url)  # the device's own user on a LAN fleet
        env_file, inventory = session.install_run_files(run_env(self.inventory, url),
                                                        self.inventory.text)
        return worker_command(session, env_file, inventory, self.loglevel)

    def _await(self, session: WorkerSession, started: float, success: str, owned: bool
               ) -> DeviceResult:
        device = session.device
        deadline = started + self.timeout
        nodename, served_at = None, None
        # "Is the worker still alive?" is a round trip to the device: it runs beside the wait
        # for the ready record, so a record that arrives meanwhile is answered at once
        looker = ThreadPoolExecutor(max_workers=1)
        try:
            look: Future[Pane | None] | None = None
            while time.monotonic() < deadline:
                if nodename is None:
                    nodename, served_at = self._announcement(device.name, fresh=owned)
                if nodename and ping(self.context.app, nodename, timeout=PING_TIMEOUT_S):
                    delay = round(time.time() - served_at, 3) if owned and served_at else None
                    return DeviceResult(device.name, success, f"{nodename} answered ping",
                                        nodename=nodename, serve_to_ready_s=delay)
                if look is not None and look.done():
                    pane = look.result()
                    if pane is None or pane.dead:
                        return self._died(session, pane is None)
                    look = None
                if look is None:
                    look = looker.submit(session.pane)
                elif nodename:  # announced but not answering yet: do not spin on pings
                    time.sleep(0.05)
        finally:  # a look still under way is not waited for: its answer no longer matters
            looker.shutdown(wait=False)
        output = session.last_lines(OUTPUT_LINES)
        if owned:
            session.kill()
            why = f"no answer to ping within {self.timeout:g}s; session stopped"
        else:
            why = (f"session {session.name} exists but its worker does not answer within "
                   f"{self.timeout:g}s; try `fab restart --devices {device.name}`")
        return DeviceResult(device.name, FAILED, why, output=output)

    def _announcement(self, device: str, fresh: bool) -> tuple[str | None, float | None]:
        """The node name and "can serve" time a worker announced (blocking briefly).

        A worker this launch started pushes a ready record once it consumes; one already
        running is found by its heartbeat.
        """
        raw = None if fresh else self.redis.get(heartbeat_key(device))
        if not raw:
            item = self.redis.blpop([ready_key(device)], timeout=ANNOUNCE_WAIT_S)
            raw = item[1] if item else None
        if not raw:
            return None, None
        record = json.loads(raw)
        nodename = record.get("nodename")
        return (str(nodename), float(record["time"])) if nodename else (None, None)

    def _died(self, session: WorkerSession, vanished: bool) -> DeviceResult:
        device = session.device
        if vanished:
            return DeviceResult(device.name, FAILED,
                                f"tmux session {session.name} vanished during start")
        status = session.dead_status()
        output = session.last_lines(OUTPUT_LINES + 1)
        if status is None:
            status = exit_status_from(output)
        output = [ln for ln in output if exit_status_from([ln]) is None][-OUTPUT_LINES:]
        shown = "unknown" if status is None else str(status)
        last = next((ln for ln in reversed(output) if ln.strip()), "")
        reason = f"worker exited with status {shown} during start" + (f": {last}" if last else "")
        return DeviceResult(device.name, FAILED, reason, exit_status=status, output=output)


def worker_command(session: WorkerSession, env_file: str, inventory: str,
                   loglevel: str | None = None, python: str | None = None) -> list[str]:
    """The worker's command on its device, reading the run files ``env_file`` and ``inventory``
    (``fab launch`` and the device's systemd unit, :mod:`ops.autostart`, run the same)."""
    return [python or session.worker_python, "-m", "workers", "--device", session.device.name,
            "--inventory", inventory, "--env-file", env_file, "--state-dir", session.state_dir,
            # an SSH device's inventory is a run file: its project is the current release's
            # (fab deploy), else the workdir
            *([] if session.device.is_local else ["--project", session.project_dir]),
            *(["--loglevel", loglevel] if loglevel else [])]
