"""The order of a rolling restart: canaries first, then batches of at most ``--batch`` devices,
chosen so that no batch holds every consumer of a queue that another device also consumes.

Each device consumes its own queue, ``catdog.any`` and one queue per capability
(:mod:`catdog.routing`). A batch is filled greedily, in the inventory's order: a device joins the
batch unless, with it, the batch would hold every device of the inventory that has one of its
capabilities (``any`` counts as a capability every device has). A capability that only one device
has cannot be kept served while that device restarts; that is the one gap a rollout allows, and
the device is restarted alone-or-with-others like any other. One device always fits an empty
batch, so every device is placed.
"""

from __future__ import annotations

from collections.abc import Sequence

from catdog.inventory import Device, Inventory

ANY = "any"  # the queue every device consumes, as a capability everyone has


def holders(inventory: Inventory) -> dict[str, set[str]]:
    """Capability -> the names of the inventory's devices that have it (``any``: all of them)."""
    found: dict[str, set[str]] = {ANY: set(inventory.devices)}
    for device in inventory.devices.values():
        for capability in device.capabilities:
            found.setdefault(capability, set()).add(device.name)
    return found


def fits(device: Device, batch: Sequence[Device], held: dict[str, set[str]]) -> bool:
    """Whether ``device`` may join ``batch``: no capability (of at least two devices) would have
    all its devices in the batch at once."""
    names = {d.name for d in batch} | {device.name}
    for capability in (ANY, *device.capabilities):
        have = held.get(capability, set())
        if len(have) > 1 and have <= names:
            return False
    return True


def plan(inventory: Inventory, devices: Sequence[Device], size: int) -> list[list[Device]]:
    """``devices`` in batches of at most ``size``, each leaving every shared queue a consumer."""
    held = holders(inventory)
    left = list(devices)
    batches: list[list[Device]] = []
    while left:
        batch: list[Device] = []
        for device in list(left):
            if len(batch) < size and fits(device, batch, held):
                batch.append(device)
                left.remove(device)
        batches.append(batch)
    return batches


def canaries(devices: Sequence[Device], count: int) -> list[Device]:
    """The ``count`` canaries: SSH devices first (they have releases to go back to)."""
    ordered = sorted(devices, key=lambda d: d.is_local)
    return ordered[:count]
