"""The device lifecycle operations of :mod:`ops.api`: releases and rolling deploys
(:mod:`ops.rollout`), rolling restarts, rollback, and autostart at boot (:mod:`ops.autostart`).
Each opens its fleet as every operation does (:mod:`ops.opening`).
"""

from __future__ import annotations

from catdog.errors import UsageError
from ops.fanout import EventCallback
from ops.opening import Devices, answering, broker_errors, load, select
from ops.results import GroupResult


@broker_errors
def enable(inventory: str | None = None, devices: Devices = None, *, timeout: float = 30.0,
           coordinator: bool = False, services: str = "",
           on_event: EventCallback | None = None) -> GroupResult:
    """Install and start on each device a systemd unit that starts its worker at boot and again
    when it dies (:mod:`ops.autostart`); ENABLED once the worker answers. A device without
    systemd is refused (:class:`ops.autostart.NoSystemd`) before anything is written.
    ``coordinator``: units on this machine for the embedded Redis, beat and Flower instead
    (``services``: which; :mod:`ops.coordinator_units`)."""
    from ops.autostart import Autostart, check_systemd

    inv = load(inventory)
    if coordinator:
        from ops import coordinator_units

        if devices:
            raise UsageError("--coordinator acts on this machine's services, --devices on "
                             "devices: run them as two commands")
        return GroupResult(coordinator_units.enable(inv, services or "", timeout,
                                                    on_event or (lambda *_: None)))
    if services:
        raise UsageError("--services names coordinator services: it goes with --coordinator")
    selected = select(inv, devices)
    check_systemd(inv, selected)  # before the embedded Redis starts
    with answering(inv) as context:
        return GroupResult(Autostart(inv, context.url, timeout=timeout, on_event=on_event)
                           .enable(selected))


@broker_errors
def disable(inventory: str | None = None, devices: Devices = None, *,
            coordinator: bool = False, services: str = "",
            on_event: EventCallback | None = None) -> GroupResult:
    """Remove each device's systemd unit (its worker keeps running until ``fab stop``);
    ``coordinator``: this machine's units for ``services`` (default: all there are)."""
    from ops.autostart import Autostart

    inv = load(inventory)
    if coordinator:
        from ops import coordinator_units

        return GroupResult(coordinator_units.disable(inv, services or ""))
    selected = select(inv, devices)
    with answering(inv) as context:
        return GroupResult(Autostart(inv, context.url, on_event=on_event).disable(selected))


@broker_errors
def deploy_fleet(inventory: str | None = None, devices: Devices = None, *, restart: bool = False,
                 batch: int = 1, canary: int = 0, check: str | None = None,
                 check_timeout: float = 30.0, watch_s: float = 60.0, keep: int = 2,
                 timeout: float = 30.0, loglevel: str | None = None,
                 on_event: EventCallback | None = None) -> GroupResult:
    """``fab deploy``: :func:`deploy` (keeping ``keep`` releases per device), or with ``restart``
    a rolling deploy (:mod:`ops.rollout`): batches of ``batch``, ``canary`` canaries checked with
    ``check`` (default the built-in ``tasks.check``) and watched ``watch_s`` seconds first."""
    from ops.deploy import Deployer
    from ops.launch import check_loglevel
    from ops.rolling import DeployPrepare, check_plan, deploy_targets
    from ops.rollout import Rollout

    inv = load(inventory)
    selected = select(inv, devices)
    if not restart:
        if canary or check or batch != 1:
            raise UsageError("--batch, --canary and --check go with --restart (a rolling deploy): "
                             "add --restart, or leave them out to install without restarting")
        return GroupResult(Deployer(inv, on_event=on_event, keep=keep).deploy(selected))
    check_plan(inv, selected, canary, check)
    if loglevel:
        check_loglevel(loglevel)
    with answering(inv) as context:
        deployer = Deployer(inv, on_event=on_event, switch=False, keep=keep)
        targets, skipped = deploy_targets(deployer, selected)
        rows = Rollout(context, batch=batch, canary=canary, check=check,
                       check_timeout=check_timeout, watch_s=watch_s, timeout=timeout,
                       loglevel=loglevel, on_event=on_event, keep=keep).run(
            targets, DeployPrepare(context, deployer))
        found = {r.device: r for r in [*rows, *skipped]}
        return GroupResult(found[d.name] for d in selected)


@broker_errors
def restart_fleet(inventory: str | None = None, devices: Devices = None, *,
                  rolling: bool = False, batch: int = 1, timeout: float = 30.0,
                  loglevel: str | None = None, on_event: EventCallback | None = None
                  ) -> GroupResult:
    """``fab restart``: :func:`restart`, or with ``rolling`` warm restarts in batches of
    ``batch``, each READY before the next (the releases stay as they are)."""
    from ops.api import restart
    from ops.launch import check_loglevel
    from ops.rolling import restart_targets
    from ops.rollout import Rollout

    if not rolling:
        if batch != 1:
            raise UsageError("--batch goes with --rolling: add --rolling, or leave --batch out")
        return restart(inventory, devices, timeout=timeout, on_event=on_event, loglevel=loglevel)
    inv = load(inventory)
    selected = select(inv, devices)
    if loglevel:
        check_loglevel(loglevel)
    with answering(inv) as context:
        return GroupResult(Rollout(context, batch=batch, timeout=timeout, loglevel=loglevel,
                                   on_event=on_event).run(restart_targets(inv, selected)))


@broker_errors
def rollback(inventory: str | None = None, devices: Devices = None, *, batch: int = 1,
             timeout: float = 30.0, loglevel: str | None = None,
             on_event: EventCallback | None = None) -> GroupResult:
    """``fab rollback``: each SSH device back to the release before its current one, restarted
    warm in batches; refused with nothing changed when a device has no earlier release."""
    from ops.rolling import rollback_targets
    from ops.rollout import Rollout

    inv = load(inventory)
    selected = select(inv, devices)
    targets = rollback_targets(inv, selected)
    with answering(inv) as context:
        return GroupResult(Rollout(context, batch=batch, timeout=timeout, loglevel=loglevel,
                                   on_event=on_event, backwards=True).run(targets))
