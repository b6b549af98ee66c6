"""Per-device resources: ``resources: {camera: 1}`` on a device, ``@app.task(uses={"camera": 1})``.

At most that many units of each resource are held by running tasks on the device at once,
whatever its concurrency. Each device's resource is a Redis sorted set, ``catdog:resource:<device>:
<name>``: one member per unit held (``<task id>:<n>``), scored by when its lease runs out. The
worker takes the units in one atomic script before a task starts (:data:`ACQUIRE`, which first
drops the leases that ran out), renews them on every heartbeat and gives them back when the task
settles; a worker that dies holds them only until their lease runs out (:data:`LEASE_S`). A task
that cannot have them waits unstarted, deferred (:mod:`workers.resources`).

A call is refused when no device it may run on declares what its task uses (:func:`refusal`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from catdog.errors import UsageError
from catdog.inventory import Device, Inventory
from catdog.routing import ANY_QUEUE, Route, device_queue
from catdog.targets import NAME_RE

#: seconds a unit stays held without its worker renewing it (every heartbeat does)
LEASE_S = 10.0

# KEYS: one sorted set per resource; ARGV: now, lease end, holder, then units and capacity per
# key. Takes every resource or none; returns 1 when taken.
ACQUIRE = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local units, capacity = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if redis.call('ZCARD', key) + units > capacity then return 0 end
end
for i, key in ipairs(KEYS) do
  for n = 1, tonumber(ARGV[2 + 2 * i]) do
    redis.call('ZADD', key, ARGV[2], ARGV[3] .. ':' .. n)
  end
end
return 1
"""


def resource_key(device: str, name: str) -> str:
    return f"catdog:resource:{device}:{name}"


def members(holder: str, units: int) -> list[str]:
    return [f"{holder}:{n}" for n in range(1, units + 1)]


def checked_uses(value: Any, where: str) -> dict[str, int]:
    """``value`` as what a task uses (resource name -> units, 1 or more), else a UsageError.

    >>> checked_uses({"camera": 1}, "task 'x'")
    {'camera': 1}
    >>> checked_uses({"camera": 0}, "task 'x'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    catdog.errors.UsageError: task 'x': uses must map resource names to whole numbers ...
    """
    fits = isinstance(value, Mapping) and all(
        isinstance(k, str) and NAME_RE.match(k) and isinstance(v, int)
        and not isinstance(v, bool) and v >= 1 for k, v in value.items())
    if not fits:
        raise UsageError(f"{where}: uses must map resource names to whole numbers of 1 or more, "
                         f"like uses={{'camera': 1}}; got {value!r}")
    return dict(value)


def lacking(device: Device, uses: Mapping[str, int]) -> list[str]:
    """What ``device`` does not declare enough of for ``uses`` (``camera: 2 of 1``)."""
    return [f"{name}: {units} (it declares {device.resources.get(name, 0)})"
            for name, units in sorted(uses.items()) if device.resources.get(name, 0) < units]


def refusal(inventory: Inventory, task: str, uses: Mapping[str, int], route: Route
            ) -> str | None:
    """Why a call of ``task`` routed by ``route`` cannot ever hold what it uses (None: it can):
    a pinned device must declare enough of each; a shared queue needs one such device."""
    pinned = {device_queue(n): d for n, d in inventory.devices.items()}
    targets = [pinned[q] for q in route.queues if q in pinned]
    for device in targets:
        missing = lacking(device, uses)
        if missing:
            return (f"task {task!r} uses {', '.join(missing)} on device {device.name!r}; declare "
                    f"it under devices.{device.name}.resources in {inventory.path.name}")
    if targets:
        return None
    shared = route.queue
    fit = [d for d in inventory.devices.values() if not lacking(d, uses) and (
        shared == ANY_QUEUE or shared in _capability_queues(d))]
    if fit:
        return None
    declared = ", ".join(f"{d.name} {dict(d.resources)}" for d in inventory.devices.values()
                         if d.resources) or "none"
    return (f"task {task!r} uses {dict(uses)}, which no device it may run on declares under "
            f"resources: (declared: {declared})")


def _capability_queues(device: Device) -> set[str]:
    from catdog.routing import worker_queues

    return set(worker_queues(device, [tuple(device.capabilities)]))
