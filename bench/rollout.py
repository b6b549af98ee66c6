"""A rolling restart of N SSH devices (``fab restart --rolling``, batches of 1) against a plain
``fab restart`` of them all at once, while a producer keeps sending work to the capability every
device has: the wall time of each, and the longest gap in service the capability saw (the longest
time between two consecutive task completions, from the result backend's ``date_done``; with the
stream's one task per 50 ms that is ~0.05 s while the capability is served).

The devices start from their own ``python`` (no releases): the restart, drain and READY path is
what is measured, not an install.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from bench.testbed import ssh_fleet
from catdog.context import open_fleet
from ops.launch import Launcher
from ops.results import READY
from ops.rolling import restart_targets
from ops.rollout import Rollout
from ops.stop import Stopper

SEND_EVERY_S = 0.05
CAPABILITY = "bench"


def _stream(stop: threading.Event, sent: list[Any]) -> None:
    from catdog.tasks import run_on

    while not stop.is_set():
        sent.append(run_on.delay(f"cap:{CAPABILITY}", "true"))
        time.sleep(SEND_EVERY_S)


def _during(action: Any) -> dict[str, Any]:
    """Run ``action`` while a stream of tasks goes to the capability; time, gap and losses."""
    sent: list[Any] = []
    stop = threading.Event()
    producer = threading.Thread(target=_stream, args=(stop, sent))
    producer.start()
    time.sleep(1.0)
    started = time.monotonic()
    rows = action()
    wall = time.monotonic() - started
    time.sleep(1.0)
    stop.set()
    producer.join()
    done: list[float] = []
    lost = 0
    for result in sent:
        try:
            result.get(timeout=120)
            done.append(result.date_done.timestamp())
        except Exception:  # a task that never completed: counted, not fatal
            lost += 1
    done.sort()
    gaps = [b - a for a, b in itertools.pairwise(done)]
    return {"wall_s": round(wall, 2), "longest_gap_s": round(max(gaps, default=0.0), 2),
            "tasks": len(sent), "lost": lost, "ok": all(r.state == READY for r in rows)}


def run(devices: int = 8) -> dict[str, Any]:
    with ssh_fleet(devices) as bed:
        inventory = bed.inventory
        chosen = inventory.select(None)
        context = open_fleet(inventory, bed.broker_url)
        failures: list[str] = []
        launched = Launcher(context).launch(chosen)
        failures += [f"{r.device}: {r.reason}" for r in launched if r.state != READY]

        def plain() -> list[Any]:
            Stopper(context).stop(chosen)
            return Launcher(context).launch(chosen)

        def rolling() -> list[Any]:
            return Rollout(context, batch=1).run(restart_targets(inventory, chosen))

        found: dict[str, Any] = {"devices": devices, "bed": bed.kind,
                                 "plain": _during(plain), "rolling": _during(rolling)}
        Stopper(context, force=True).stop(chosen)
    for name in ("plain", "rolling"):
        if not found[name]["ok"]:
            failures.append(f"{name}: not every device came back READY")
    found["failures"] = failures
    return found


def rows(found: dict[str, Any]) -> list[str]:
    lines = [f"restart of {found['devices']} SSH devices ({found['bed']}), a task to "
             f"cap:{CAPABILITY} every {SEND_EVERY_S * 1000:.0f} ms:"]
    for name, label in (("plain", "fab restart (all at once)"),
                        ("rolling", "fab restart --rolling (batch 1)")):
        r = found[name]
        lines.append(f"  {label}: {r['wall_s']:.1f} s, longest gap in service "
                     f"{r['longest_gap_s']:.2f} s, {r['tasks']} tasks, {r['lost']} lost")
    return lines
