"""``fab metrics [--since 1h]``: ask every live worker to write its buffered task metrics, then
gather each device's metrics file (``.catdog/metrics/<device>.lp`` and its older ``.lp.1``) into
``metrics/<device>.lp`` beside the inventory, keeping the lines of the last ``since`` seconds."""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from pathlib import Path

from catdog.context import FleetContext
from catdog.inventory import Device, Inventory
from catdog.records import METRICS_FLUSH_COMMAND, live_nodes
from ops.fanout import EventCallback, on_each, quiet
from ops.results import GATHERED, DeviceResult
from ops.session import WorkerSession

FLUSH_TIMEOUT_S = 3.0


def flush_live_workers(context: FleetContext, devices: Sequence[Device]) -> int:
    """Ask the live workers among ``devices`` to write their metrics now; how many answered."""
    live = list(live_nodes(context.answering(), [d.name for d in devices]).values())
    if not live:
        return 0
    replies = context.app.control.broadcast(METRICS_FLUSH_COMMAND, destination=live, reply=True,
                                    timeout=FLUSH_TIMEOUT_S) or []
    return len(replies)


def timestamp_s(text: str) -> float | None:
    """The time of a line-protocol line (its last field, in ns), or None if it has none."""
    last = text.rsplit(" ", 1)[-1]
    return int(last) / 1e9 if last.isdigit() else None


class Gatherer:
    def __init__(self, inventory: Inventory, dest: Path, since_s: float | None = None,
                 on_event: EventCallback | None = None) -> None:
        self.inventory = inventory
        self.dest = dest
        self.cutoff = time.time() - since_s if since_s else None
        self.on_event = on_event or quiet

    def gather(self, devices: Sequence[Device]) -> list[DeviceResult]:
        self.dest.mkdir(parents=True, exist_ok=True)
        return on_each(self.inventory, devices, self._one, self.on_event)

    def _one(self, session: WorkerSession, started: float) -> DeviceResult:
        name = session.device.name
        base = f"{session.state_dir}/metrics/{name}.lp"
        text = session.host.shell(f"cat {shlex.quote(base + '.1')} {shlex.quote(base)} "
                                  f"2>/dev/null", timeout=120).stdout
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if self.cutoff is not None:
            lines = [ln for ln in lines if (timestamp_s(ln) or 0) >= self.cutoff]
        out = self.dest / f"{name}.lp"
        out.write_text("".join(f"{ln}\n" for ln in lines))
        tasks = sum(1 for ln in lines if ln.startswith("catdog_task,"))
        return DeviceResult(name, GATHERED, f"{tasks} task lines, {len(lines) - tasks} "
                                            f"minute summaries -> {out}")
