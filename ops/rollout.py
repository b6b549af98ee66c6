"""A rolling deploy, restart or rollback: devices restarted warm in batches, canaries first.

Every device has a target: the release to switch ``current`` to before its restart (``fab deploy
--restart``: the new one, already installed beside the others; ``fab rollback``: the previous one)
or none (``fab restart --rolling``: the same release again). The order is :mod:`ops.batches`'s.
One device's step: switch, drain (the worker's warm shutdown, :class:`ops.stop.Stopper`: it takes
no new task and finishes the running ones, up to ``timeout``; what it had not started goes back to
its queue), restart (:class:`ops.launch.Launcher`), READY. A batch starts only when every device of
the one before is READY.

Canaries go first: each one, once READY, must answer the check task (``tasks.check`` unless
``check`` names a project task) within ``check_timeout``, then stay alive for ``watch_s``. A canary
that fails any of it sends every canary back to the release it had (switched back and restarted)
and the other devices are never touched: their rows say so and the rollout's status is non-zero.
After the canaries, a device that does not come back READY is sent back to its old release the
same way, and the batches after it are not started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from catdog.context import FleetContext
from catdog.inventory import Device
from catdog.tasks.check import NAME as BUILTIN_CHECK
from ops import batches, releases
from ops.fanout import EventCallback, parallel, quiet
from ops.launch import Launcher
from ops.releases import ReleaseResult
from ops.results import FAILED, SKIPPED, UNCHANGED, DeviceResult
from ops.session import WorkerSession, worker_session
from ops.stop import Stopper

ROLLED_BACK = "ROLLED BACK"
DEFAULT_CHECK_TIMEOUT_S = 30.0
DEFAULT_WATCH_S = 60.0
WATCH_EVERY_S = 0.5
OUTPUT_LINES = 30
#: rows ``prepare`` returns for a device that needs no restart
NOTHING_TO_DO = (UNCHANGED, SKIPPED)


@dataclass
class Target:
    """One device of a rollout: the release it runs now and the one to switch to (None: keep)."""

    device: Device
    before: str | None
    switch_to: str | None

    @property
    def after(self) -> str | None:
        return self.switch_to if self.switch_to is not None else self.before


class Rollout:
    """Restarts devices of the fleet ``context`` batch by batch, canaries first."""

    def __init__(self, context: FleetContext, *, batch: int = 1, canary: int = 0,
                 check: str | None = None, check_timeout: float = DEFAULT_CHECK_TIMEOUT_S,
                 watch_s: float = DEFAULT_WATCH_S, timeout: float = 30.0,
                 loglevel: str | None = None, on_event: EventCallback | None = None,
                 keep: int = releases.DEFAULT_KEEP, backwards: bool = False) -> None:
        self.context = context
        self.keep = keep
        self.backwards = backwards  # fab rollback: its switches remove no release
        self.inventory = context.inventory
        self.batch = batch
        self.canary = canary
        self.check = check or BUILTIN_CHECK
        self.check_timeout = check_timeout
        self.watch_s = watch_s
        self.timeout = timeout
        self.loglevel = loglevel
        self.on_event = on_event or quiet

    def run(self, targets: Sequence[Target],
            prepare: Callable[[Sequence[Target]], dict[str, ReleaseResult]] | None = None
            ) -> list[ReleaseResult]:
        """Roll ``targets`` out; ``prepare`` (install the new release) runs on the canaries
        first, then on the others, and a device it fails is left as it was. A row per target."""
        by_name = {t.device.name: t for t in targets}
        done: dict[str, ReleaseResult] = {}
        chosen = batches.canaries([t.device for t in targets], self.canary)
        rest = [t.device for t in targets if t.device not in chosen]
        groups = [(True, chosen), (False, rest)] if chosen else [(False, rest)]
        for is_canary, devices in groups:
            ready = self._prepared([by_name[d.name] for d in devices], prepare, done)
            failed = [d.name for d in devices if d.name in done and not done[d.name].ok]
            if is_canary and failed:  # a canary that cannot even install its release
                self._untouched(targets, done, f"canary {failed[0]} failed to install")
                break
            plan = batches.plan(self.inventory, [d for d in devices if d.name in ready],
                                self.canary if is_canary else self.batch)
            stopped = self._batches(plan, by_name, done, is_canary)
            if stopped:
                self._untouched(targets, done, stopped)
                break
        return [done[t.device.name] for t in targets]

    def _prepared(self, group: list[Target],
                  prepare: Callable[[Sequence[Target]], dict[str, ReleaseResult]] | None,
                  done: dict[str, ReleaseResult]) -> set[str]:
        """The devices of ``group`` ready to restart (the others' rows are their failures)."""
        if prepare is None or not group:
            return {t.device.name for t in group}
        for name, result in prepare(group).items():
            if not result.ok or result.state in NOTHING_TO_DO:
                done[name] = result
        return {t.device.name for t in group} - set(done)

    def _batches(self, plan: list[list[Device]], by_name: dict[str, Target],
                 done: dict[str, ReleaseResult], is_canary: bool) -> str:
        """Run the batches in order; why the rollout stopped ("" when it did not)."""
        finished: list[Target] = []
        for batch in plan:
            group = [by_name[d.name] for d in batch]
            for target, result in zip(group, parallel(batch, lambda d: self._step(by_name[d.name])),
                                      strict=True):
                done[target.device.name] = result
            finished += group
            failed = [t for t in group if not done[t.device.name].ok]
            if failed and not is_canary:
                for target in failed:
                    self._back(target, done)
                return f"{failed[0].device.name} failed"
            if failed:
                break
        if not is_canary:
            return ""
        failed_names = [t.device.name for t in finished if not done[t.device.name].ok]
        if not failed_names:
            failed_names = self._checked(finished, done)
        if failed_names:
            for target in finished:
                self._back(target, done)
            return f"canary {failed_names[0]} failed"
        return ""

    def _step(self, target: Target) -> ReleaseResult:
        """Switch, drain, restart, READY: one device's turn."""
        name = target.device.name
        started = time.monotonic()
        if target.switch_to is not None and target.switch_to != target.before:
            self.on_event(name, "switching", f"{target.before or 'none'} -> {target.switch_to}")
            self._switch(target.device, target.switch_to, forward=not self.backwards)
        launched = self._restart(target.device)
        return self._row(target, launched, started)

    def _restart(self, device: Device) -> DeviceResult:
        self.on_event(device.name, "draining", f"warm shutdown, up to {self.timeout:g}s")
        Stopper(self.context, timeout=self.timeout).stop([device])
        self.on_event(device.name, "restarting", "")
        return Launcher(self.context, timeout=self.timeout, on_event=self.on_event,
                        loglevel=self.loglevel).launch([device])[0]

    def _switch(self, device: Device, release: str | None, forward: bool = True) -> None:
        """Switch ``current``; going forward prunes to ``keep`` releases, going back nothing."""
        with worker_session(self.inventory, device) as session:
            if release is None:
                releases.unswitch(session)
            else:
                releases.switch(session, release, keep=self.keep if forward else None)

    def _row(self, target: Target, launched: DeviceResult, started: float) -> ReleaseResult:
        return ReleaseResult(target.device.name, launched.state, launched.reason,
                             elapsed_s=round(time.monotonic() - started, 3),
                             nodename=launched.nodename, exit_status=launched.exit_status,
                             output=launched.output, previous_release=target.before,
                             release=target.after)

    def _back(self, target: Target, done: dict[str, ReleaseResult]) -> None:
        """Send a device that was switched back to its old release, restarted and READY."""
        row = done[target.device.name]
        if target.switch_to is None or target.switch_to == target.before:
            return
        name = target.device.name
        self.on_event(name, "rolling back", f"{target.switch_to} -> {target.before or 'none'}")
        try:
            self._switch(target.device, target.before, forward=False)
            back = self._restart(target.device)
            note = (f"rolled back to {target.before or 'the device python'}: {back.state}"
                    + ("" if back.ok else f" ({back.reason})"))
        except Exception as exc:  # the row must still say what happened
            note = f"rolling back to {target.before or 'the device python'} failed: {exc}"
        row.reason = f"{row.reason}; {note}" if row.state == FAILED else note
        if row.state != FAILED:
            row.state = ROLLED_BACK
        row.release = target.before

    def _untouched(self, targets: Sequence[Target], done: dict[str, ReleaseResult],
                   why: str) -> None:
        for t in targets:
            if t.device.name not in done:
                done[t.device.name] = ReleaseResult(
                    t.device.name, SKIPPED, f"not touched: {why}", previous_release=t.before,
                    release=t.before)

    def _checked(self, canaries: list[Target], done: dict[str, ReleaseResult]) -> list[str]:
        """Check, then watch, every canary; the names of those that failed (rows updated)."""
        with ThreadPoolExecutor(max_workers=max(1, len(canaries))) as pool:
            verdicts = list(pool.map(self._check_one, canaries))
        failed = []
        for target, (why, output) in zip(canaries, verdicts, strict=True):
            if why:
                row = done[target.device.name]
                row.state, row.reason, row.output = FAILED, why, output
                failed.append(target.device.name)
        return failed

    def _check_one(self, target: Target) -> tuple[str, list[str]]:
        """("", []) when the canary passed its check and its watch, else why and its output."""
        name = target.device.name
        from catdog.routing import device_queue

        self.on_event(name, "checking", self.check)
        try:
            answer = self.context.app.send_task(self.check, queue=device_queue(name)).get(
                timeout=self.check_timeout, disable_sync_subtasks=False)
        except Exception as exc:
            return (f"check {self.check} failed on canary {name}: {type(exc).__name__}: "
                    f"{exc}"[:500], self._output(target.device))
        if answer is False:
            return f"check {self.check} answered False on canary {name}", []
        self.on_event(name, "check passed", self.check)
        return self._watch(target.device)

    def _watch(self, device: Device) -> tuple[str, list[str]]:
        if self.watch_s <= 0:
            return "", []
        self.on_event(device.name, "watching", f"{self.watch_s:g}s")
        with worker_session(self.inventory, device) as session:
            deadline = time.monotonic() + self.watch_s
            while time.monotonic() < deadline:
                pane = session.pane()
                if pane is None or pane.dead:
                    return self._died(session, pane is None)
                time.sleep(WATCH_EVERY_S)
        self.on_event(device.name, "watched", f"alive for {self.watch_s:g}s")
        return "", []

    def _died(self, session: WorkerSession, vanished: bool) -> tuple[str, list[str]]:
        name = session.device.name
        if vanished:
            return f"canary {name}'s session vanished within --watch {self.watch_s:g}s", []
        status = session.dead_status()
        return (f"canary {name}'s worker died within --watch {self.watch_s:g}s (exit status "
                f"{'unknown' if status is None else status})", session.last_lines(OUTPUT_LINES))

    def _output(self, device: Device) -> list[str]:
        try:
            with worker_session(self.inventory, device) as session:
                return session.last_lines(OUTPUT_LINES)
        except Exception:  # the evidence is a bonus; the verdict stands without it
            return []

