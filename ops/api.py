"""The fleet operations from Python, without ``fab`` (the fabfile is a thin shell over these).

Each takes the inventory path (default: ``$CATDOG_INVENTORY``, else ``./catdog.yaml``), the devices
(``"a,b"``, a list, or None for all) and an optional ``on_event(device, event, detail)`` callback
(events such as ``starting``, ``ready``, ``failed``), and returns a :class:`GroupResult`: one
:class:`~ops.results.DeviceResult` per device, like Fabric's ``GroupResult``::

    from ops import api
    found = api.launch("catdog.yaml", "pi4,zero-1", on_event=print)
    if not found.ok:
        for name, result in found.failed.items():
            print(name, result.reason, *result.output, sep="\\n")

A bad inventory raises :class:`catdog.InventoryError` before anything starts; a broker that does
not answer raises :class:`catdog.errors.BrokerUnreachable` (a ``BrokerError``), at once for the
calls that need it (launch, restart, beat, flower, metrics) and never the Redis client's own
``ConnectionError``. A call that starts the embedded Redis says so on stderr; ``status``,
``stop`` and reading the kill switch never start it. ``status`` returns a row per device,
``logs`` each device's log text, ``killswitch`` the switch's report (every ``fab`` command is one
of these calls, :mod:`ops.commands`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from catdog import broker
from catdog.errors import BrokerError, CatDogError, UsageError
from catdog.inventory import Device, Inventory
from catdog.killswitch import Report
from ops.fanout import EventCallback
from ops.opening import Devices, load, running_broker
from ops.opening import answering as _answering
from ops.opening import broker_errors as _broker_errors
from ops.opening import resolved as _resolved
from ops.opening import running as _running
from ops.opening import select as _select
from ops.results import GroupResult, QuarantineReport, StoppedSwitch


@_broker_errors
def launch(inventory: str | None = None, devices: Devices = None, *, timeout: float = 30.0,
           on_event: EventCallback | None = None, loglevel: str | None = None) -> GroupResult:
    """Start workers in tmux (the embedded Redis first, if the fleet uses it); READY once each
    answers a ping. ``loglevel``: the workers' (default INFO; DEBUG adds a line per task)."""
    from ops.launch import Launcher, check_loglevel

    inv = load(inventory)
    selected = _select(inv, devices)
    if loglevel:
        check_loglevel(loglevel)  # before the broker starts
    with _answering(inv) as context:
        return GroupResult(Launcher(context, timeout=timeout, on_event=on_event,
                                    loglevel=loglevel).launch(selected))


@_broker_errors
def stop(inventory: str | None = None, devices: Devices = None, *, timeout: float = 30.0,
         force: bool = False, on_event: EventCallback | None = None) -> GroupResult:
    """Warm shutdown (then kill after ``timeout``); stopping the whole fleet also stops the
    scheduler and Flower (``beat`` and ``flower`` rows) and the embedded Redis (the event
    ``embedded Redis: stopped``)."""
    from ops.embedded_redis import EmbeddedRedis
    from ops.stop import Stopper

    inv = load(inventory)
    selected = _select(inv, devices)
    found = GroupResult(Stopper(_running(inv), timeout=timeout, force=force,
                                on_event=on_event).stop(selected))
    if not devices:
        from ops.services import BEAT, FLOWER, stop_service

        for service in (BEAT, FLOWER):
            stopped_service = stop_service(inv, service)
            if stopped_service is not None:
                found[service] = stopped_service
    if not devices and broker.configured_url(inv) is None:
        stopped = EmbeddedRedis(inv.state_dir).stop()
        if on_event:
            on_event("embedded Redis", "stopped" if stopped else "was not running", "")
    return found


@_broker_errors
def beat(inventory: str | None = None) -> GroupResult:
    """Start the scheduler in tmux session ``catdog-beat`` (ACTIVE, or STANDBY when another
    scheduler on the same broker is active); returns at once."""
    from ops.services import start_beat
    from ops.tasknames import check_schedule

    inv = load(inventory)
    check_schedule(inv)  # a task no worker has is refused before the broker or beat starts
    return GroupResult([start_beat(_answering(inv))])


@_broker_errors
def flower(inventory: str | None = None, *, port: int = 5555, address: str = "127.0.0.1"
           ) -> GroupResult:
    """Start Flower for the fleet in tmux session ``catdog-flower``; the row's reason is its URL.
    Beyond loopback it needs ``$CATDOG_FLOWER_AUTH`` (``user:password``)."""
    from ops.services import start_flower

    inv = load(inventory)
    return GroupResult([start_flower(_answering(inv), port, address)])


@_broker_errors
def restart(inventory: str | None = None, devices: Devices = None, *, timeout: float = 30.0,
            on_event: EventCallback | None = None, loglevel: str | None = None) -> GroupResult:
    """Stop, then launch (the broker stays up)."""
    from ops.launch import Launcher, check_loglevel
    from ops.stop import Stopper

    inv = load(inventory)
    selected = _select(inv, devices)
    if loglevel:
        check_loglevel(loglevel)  # before anything stops
    with _answering(inv) as context:
        Stopper(context, timeout=timeout, on_event=on_event).stop(selected)
        return GroupResult(Launcher(context, timeout=timeout, on_event=on_event,
                                    loglevel=loglevel).launch(selected))


@_broker_errors
def deploy(inventory: str | None = None, devices: Devices = None, *,
           on_event: EventCallback | None = None) -> GroupResult:
    """Install CatDog into each SSH device's venv (created if missing) and copy the project's
    task modules into its workdir; idempotent."""
    from ops.deploy import Deployer

    inv = load(inventory)
    return GroupResult(Deployer(inv, on_event=on_event).deploy(_select(inv, devices)))


@_broker_errors
def doctor(inventory: str | None = None, devices: Devices = None, *,
           on_event: EventCallback | None = None) -> GroupResult:
    """Every check per device (results are :class:`ops.doctor.DoctorResult`, with ``checks``)."""
    from ops.build import catdog_to_ship
    from ops.doctor import Doctor

    inv = load(inventory)
    selected = _select(inv, devices)
    url, problem = None, ""
    try:
        url = _resolved(inv, start_embedded=True)
    except BrokerError as exc:
        problem = str(exc)
    fingerprint = None
    with contextlib.suppress(CatDogError, OSError):
        fingerprint = catdog_to_ship().fingerprint
    return GroupResult(Doctor(inv, url, broker_problem=problem, fingerprint=fingerprint,
                              on_event=on_event).check(selected))


@_broker_errors
def metrics(inventory: str | None = None, devices: Devices = None, *,
            since_s: float | None = None, dest: str | None = None,
            on_event: EventCallback | None = None) -> GroupResult:
    """Ask live workers to write their task metrics, then gather every device's into ``dest``
    (default ``metrics/`` beside the inventory), keeping the last ``since_s`` seconds. A stopped
    fleet (its embedded Redis not running) has no live worker to ask: only the files are
    gathered, and the embedded Redis is not started for this."""
    from ops.metrics import Gatherer, flush_live_workers

    inv = load(inventory)
    selected = _select(inv, devices)
    with _running(inv) as context:
        if context.broker_url is not None:
            flush_live_workers(context, selected)
    folder = Path(dest) if dest else inv.root / "metrics"
    return GroupResult(Gatherer(inv, folder, since_s, on_event).gather(selected))


@_broker_errors
def status(inventory: str | None = None, devices: Devices = None) -> list[dict[str, Any]]:
    """A row per device, as ``fab status --json`` prints them. Reads only: on a stopped fleet
    (its embedded Redis not running) every device is offline and nothing is started."""
    inv = load(inventory)
    return status_of(inv, _select(inv, devices))


def status_of(inv: Inventory, selected: Sequence[Device]) -> list[dict[str, Any]]:
    """:func:`status` of a loaded inventory (``fab status --watch`` asks every second)."""
    from ops.status import status as rows

    context = _running(inv)
    client = context.answering() if context.broker_url is not None else None
    with context.translated():
        return rows(inv, selected, client)


@_broker_errors
def logs(inventory: str | None = None, devices: Devices = None, *, lines: int = 50,
         color: bool = False, follow: bool = False) -> dict[str, str]:
    """The last ``lines`` lines of each device's worker log, by device name (plain text unless
    ``color``). ``follow``: stream the one device's log to stdout until Ctrl-C, and return {}."""
    from ops import logs as worker_logs

    inv = load(inventory)
    selected = _select(inv, devices)
    if follow:
        if len(selected) != 1:
            raise UsageError("--follow takes exactly one device: --devices NAME")
        worker_logs.follow(inv, selected[0], lines, color)
        return {}
    return {d.name: worker_logs.recent(inv, d, lines, color) for d in selected}


@_broker_errors
def killswitch(inventory: str | None = None, *, on: bool = False, off: bool = False,
               reason: str = "", hard: bool = False) -> Report | StoppedSwitch:
    """Turn the fleet's kill switch on (``reason`` required; ``hard`` also terminates running
    tasks and re-queues them) or off, or (neither) read it with each device's state. Reading a
    stopped fleet starts nothing (a :class:`StoppedSwitch`)."""
    from catdog import killswitch as switch
    from ops.status import FLEET_STOPPED

    if on and off:
        raise UsageError("--on and --off together: choose one")
    if hard and not on:
        raise UsageError("--hard goes with --on (it terminates running tasks and re-queues them)")
    inv = load(inventory)
    if not (on or off) and running_broker(inv) is None:
        return StoppedSwitch(
            [{"device": name, "state": "offline", "detail": FLEET_STOPPED} for name in inv.devices],
            f"{FLEET_STOPPED}: the switch is kept there and holds again when `fab launch` "
            f"starts it")
    with _answering(inv) as context:
        if on:
            return switch.engage(reason, hard=hard, context=context)
        return switch.release(context=context) if off else switch.devices_state(context=context)


@_broker_errors
def quarantine(inventory: str | None = None, *, requeue: str | None = None,
               drop: str | None = None) -> QuarantineReport:
    """The messages held after ``max_deliveries`` worker losses; ``requeue`` sends the one of
    that task id to its queue again (its count starts anew), ``drop`` forgets it. An id the
    quarantine does not hold raises :class:`catdog.quarantine.NotQuarantined` (exit 2)."""
    from catdog import quarantine as held

    if requeue and drop:
        raise UsageError("--requeue and --drop together: choose one")
    inv = load(inventory)
    with _answering(inv) as context, context.translated():
        client = context.answering()
        if requeue:
            return QuarantineReport("requeued", [held.requeue(client, requeue)])
        if drop:
            return QuarantineReport("dropped", [held.drop(client, drop)])
        return QuarantineReport("listed", held.entries(client))


# the releases, rollouts and autostart operations (:mod:`ops.lifecycle`), with the rest here
from ops.lifecycle import deploy_fleet, disable, enable, restart_fleet, rollback  # noqa: E402

__all__ = ["Devices", "GroupResult", "QuarantineReport", "StoppedSwitch", "beat",
           "deploy", "deploy_fleet", "disable", "doctor", "enable", "flower",
           "killswitch", "launch", "load", "logs", "metrics", "quarantine", "restart",
           "restart_fleet", "rollback", "running_broker", "status", "status_of", "stop"]
