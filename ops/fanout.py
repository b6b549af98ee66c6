"""Fan-out over devices: one action per device, in parallel, a result for every device.

Like Fabric's ``ThreadingGroup``: an unreachable or failing device becomes a FAILED row with the
reason and never stops the others. Each action gets the device's worker session (local or SSH).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from catdog.inventory import Device, Inventory
from ops.remote import Unreachable
from ops.results import FAILED, DeviceResult
from ops.session import WorkerSession, worker_session

#: ``on_event(device, event, detail)``; events: starting, stopping, and each final state
EventCallback = Callable[[str, str, str], None]
MAX_PARALLEL = 32
R = TypeVar("R")


def quiet(device: str, event: str, detail: str) -> None:
    """The default event callback: say nothing."""


def on_each(inventory: Inventory, devices: Sequence[Device],
            action: Callable[[WorkerSession, float], DeviceResult],
            on_event: EventCallback = quiet) -> list[DeviceResult]:
    """Run ``action(session, started)`` for every device in parallel; results in device order."""

    def one(device: Device) -> DeviceResult:
        started = time.monotonic()
        try:
            with worker_session(inventory, device) as session:
                result = action(session, started)
        except Unreachable as exc:
            result = DeviceResult(device.name, FAILED, str(exc))
        except Exception as exc:  # one device's failure never stops the others
            result = DeviceResult(device.name, FAILED, f"{type(exc).__name__}: {exc}")
        result.elapsed_s = round(time.monotonic() - started, 3)
        on_event(device.name, result.state.lower().replace(" ", "-"), result.reason)
        return result

    return parallel(devices, one)


def parallel(devices: Sequence[Device], one: Callable[[Device], R]) -> list[R]:
    """``one(device)`` for every device at once (up to MAX_PARALLEL), results in device order."""
    if not devices:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(devices))) as pool:
        return list(pool.map(one, devices))
