"""What ``fab deploy --restart``, ``fab restart --rolling`` and ``fab rollback`` roll out: each
device's :class:`~ops.rollout.Target`, and the input they refuse before anything starts.

A rolling deploy installs the new release on a group of devices (canaries, then the others) just
before restarting them (:class:`ops.deploy.Deployer` with ``switch=False``): a device already on the
release and running it is UNCHANGED and not restarted. ``host: local`` devices have no releases
(they run the coordinator's own install): a rolling deploy leaves them alone, a rolling restart
restarts them. A rollback sends each SSH device to the release installed before its current one.
"""

from __future__ import annotations

from collections.abc import Sequence

from catdog.context import FleetContext
from catdog.errors import RolloutError, UsageError
from catdog.inventory import Device, Inventory
from catdog.records import Heartbeat, heartbeat_key
from ops import releases
from ops.deploy import Deployer
from ops.fanout import parallel
from ops.releases import ReleaseResult, Releases
from ops.results import DEPLOYED, SKIPPED, UNCHANGED
from ops.rollout import Target
from ops.session import worker_session


def check_plan(inventory: Inventory, devices: Sequence[Device], canary: int,
               check: str | None) -> None:
    """Refuse ``--canary`` beyond the devices that can be one, and a ``--check`` task no worker
    has (the project's task modules imported here, as a worker would)."""
    remote = [d.name for d in devices if not d.is_local]
    if canary > len(remote):
        raise UsageError(f"--canary {canary}: only {len(remote)} of the devices asked for have "
                         f"releases to go back to ({', '.join(remote) or 'none: all are host: local'}"
                         f"); choose --canary {len(remote)} or fewer")
    if check:
        from ops.tasknames import registered_tasks

        known = registered_tasks(inventory)
        if check not in known:
            project = sorted(n for n in known if not n.startswith(("celery.", "tasks.")))
            raise UsageError(f"--check {check!r}: no worker has that task; name one of the "
                             f"project's tasks ({', '.join(project[:8]) or 'it has none'}) or "
                             f"leave --check out for the built-in tasks.check")


def listings(inventory: Inventory, devices: Sequence[Device]) -> dict[str, Releases]:
    """Each SSH device's releases (in parallel); a local device has none."""

    def one(device: Device) -> Releases:
        if device.is_local:
            return Releases()
        with worker_session(inventory, device) as session:
            return releases.listing(session)

    return dict(zip((d.name for d in devices), parallel(devices, one), strict=True))


def restart_targets(inventory: Inventory, devices: Sequence[Device]) -> list[Target]:
    found = listings(inventory, devices)
    return [Target(d, found[d.name].current, None) for d in devices]


def rollback_targets(inventory: Inventory, devices: Sequence[Device]) -> list[Target]:
    """Each SSH device and the release before its current one; refused (nothing changed) when
    one has none."""
    remote = [d for d in devices if not d.is_local]
    if not remote:
        raise UsageError("fab rollback: the devices asked for are all host: local, which run the "
                         "coordinator's own install and have no releases; name SSH devices")
    found = listings(inventory, remote)
    stuck = [f"{d.name} (on {found[d.name].current or 'no release'})" for d in remote
             if found[d.name].previous() is None]
    if stuck:
        raise RolloutError(f"fab rollback: no earlier release to go back to on {', '.join(stuck)}; "
                           f"nothing was changed (deploy keeps --keep releases, default 2: "
                           f"deploy again to make one, or leave these out with --devices)")
    return [Target(d, found[d.name].current, found[d.name].previous()) for d in remote]


class DeployPrepare:
    """The ``prepare`` of a rolling deploy: install the release on a group of targets."""

    def __init__(self, context: FleetContext, deployer: Deployer) -> None:
        self.context = context
        self.deployer = deployer

    def __call__(self, group: Sequence[Target]) -> dict[str, ReleaseResult]:
        rows: dict[str, ReleaseResult] = {}
        installed = self.deployer.deploy([t.device for t in group])
        for target, found in zip(group, installed, strict=True):
            row = found if isinstance(found, ReleaseResult) else ReleaseResult(  # unreachable
                found.device, found.state, found.reason, elapsed_s=found.elapsed_s,
                previous_release=target.before, release=target.before)
            target.before = row.previous_release
            if row.state == UNCHANGED and self.running(target.device) != self.deployer.release:
                row.state = DEPLOYED
                row.reason = f"release {self.deployer.release} installed; its worker runs another"
            rows[target.device.name] = row
        return rows

    def running(self, device: Device) -> str | None:
        raw = self.context.redis().get(heartbeat_key(device.name))
        return Heartbeat.loads(raw).release if raw else None


def deploy_targets(deployer: Deployer, devices: Sequence[Device]) -> tuple[list[Target],
                                                                           list[ReleaseResult]]:
    """The SSH devices to roll the deployer's release out to, and the rows of the local ones."""
    skipped = [ReleaseResult(d.name, SKIPPED, "host: local runs the coordinator's own install; "
                             "`fab restart --rolling` restarts it") for d in devices if d.is_local]
    targets = [Target(d, None, deployer.release) for d in devices if not d.is_local]
    return targets, skipped

