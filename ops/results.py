"""Per-device results of fleet commands, and how they are shown (table or ``--json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

READY = "READY"
ALREADY_RUNNING = "ALREADY RUNNING"
FAILED = "FAILED"
STOPPED = "STOPPED"
NOT_RUNNING = "NOT RUNNING"
DEPLOYED = "DEPLOYED"
UNCHANGED = "UNCHANGED"
SKIPPED = "SKIPPED"
OK = "OK"
ACTIVE = "ACTIVE"
GATHERED = "GATHERED"
RUNNING = "RUNNING"
STANDBY = "STANDBY"
ENABLED = "ENABLED"
DISABLED = "DISABLED"
NOT_ENABLED = "NOT ENABLED"

SUCCESS_STATES = frozenset({READY, ALREADY_RUNNING, STOPPED, NOT_RUNNING, DEPLOYED, UNCHANGED,
                            SKIPPED, OK, ACTIVE, STANDBY, GATHERED, RUNNING, ENABLED, DISABLED,
                            NOT_ENABLED})


@dataclass
class DeviceResult:
    """One device's outcome, like an entry of Fabric's ``GroupResult``."""

    device: str
    state: str
    reason: str = ""
    elapsed_s: float = 0.0
    nodename: str | None = None
    exit_status: int | None = None
    #: launch: seconds from the worker's "ready to consume" to READY here (device clock vs ours)
    serve_to_ready_s: float | None = None
    output: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state in SUCCESS_STATES

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def all_ok(results: Sequence[DeviceResult]) -> bool:
    return all(r.ok for r in results)


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2, sort_keys=False)


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain text table, columns padded to their widest cell."""
    cells = [[str(c) for c in header]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    return "\n".join(lines)


def launch_report(results: Sequence[DeviceResult]) -> str:
    rows = [(r.device, r.state, f"{r.elapsed_s:.1f}s", r.reason) for r in results]
    text = [table(rows, ("DEVICE", "STATE", "TIME", "REASON"))]
    for r in results:
        if r.state == FAILED and r.output:
            text.append(f"\n--- {r.device}: last output lines ---")
            text.extend(r.output)
    return "\n".join(text)
