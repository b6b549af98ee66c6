"""The demo: a local fleet of three devices on the embedded Redis, running tasks routed by
device, by capability and to every device, then a results table and where to look next.

Run it with ``scripts/demo`` (which installs what it needs), or ``python examples/demo.py``.
The fleet is left running so you can look at it; ``fab stop --inventory .catdog-demo/catdog.yaml``
stops it (and its Redis).
"""

from __future__ import annotations

import os
import struct
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = Path(os.environ.get("CATDOG_DEMO_DIR", ROOT / ".catdog-demo")).absolute()
SOCKET = os.environ.get("CATDOG_DEMO_SOCKET", "catdog-demo")
INVENTORY = """\
# The demo fleet: three "devices" on this machine, each a Celery worker in tmux.
tmux_socket: {socket}
imports: []
defaults:
  concurrency: 1
{root_line}devices:
  kitchen:
    host: local
    capabilities: [camera, gpu]
    concurrency: 2
  garden:
    host: local
    capabilities: [sensor, gpio]
    pool: solo
  garage:
    host: local
    capabilities: [sensor, camera]
    pool: threads
    concurrency: 2
"""


def write_inventory() -> Path:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    root_line = ""
    if os.geteuid() == 0:
        root_line = "  allow_root: true   # the demo runs as root here; never on real devices\n"
    path = DEMO_DIR / "catdog.yaml"
    path.write_text(INVENTORY.format(root_line=root_line, socket=SOCKET))
    return path


def run_tasks() -> list[tuple[str, str, str]]:
    """Send one batch of every kind of call; return (call, device, result) rows."""
    from catdog.tasks.examples import read_temperature, render, snapshot, whoami
    from tasks import run_on

    calls: list[tuple[str, Any]] = [
        ('run_on.delay("kitchen", "uname -sr")', run_on.delay("kitchen", "uname -sr")),
        ('run_on.delay("garden", "exit 3")', run_on.delay("garden", "exit 3")),
        ("snapshot.delay()  # requires camera", snapshot.delay()),
        ("render.delay()  # requires camera+gpu", render.delay()),
        ("whoami.delay()  # no requirement", whoami.delay()),
    ]
    rows = [(label, r.get(timeout=30)["device"], _short(r.get(timeout=30))) for label, r in calls]
    group = run_on.delay("all", "hostname")
    rows += [('run_on.delay("all", "hostname")', res["device"], _short(res))
             for res in group.get(timeout=30)]
    spread = [read_temperature.on("cap:sensor").delay() for _ in range(12)]
    counts = Counter(r.get(timeout=30)["device"] for r in spread)
    rows += [('12 x read_temperature.on("cap:sensor")', dev, f"{n} of 12 ran here")
             for dev, n in sorted(counts.items())]
    return rows


#: where a task ran: the device has its own column; the rest is shown only when it is all
#: there is (whoami)
WHERE = ("device", "pid", "host")


def _short(result: dict[str, Any]) -> str:
    if "exit_code" in result:
        out = (result["stdout"] or result["stderr"]).strip().splitlines()
        return f"exit {result['exit_code']}" + (f": {out[0][:40]}" if out else "")
    if "picture" in result:
        return _picture(Path(result["picture"]))
    shown = ({k: v for k, v in result.items() if k not in WHERE}
             or {k: result[k] for k in WHERE[1:]})
    return ", ".join(f"{k}={v}" for k, v in shown.items())[:60]


def _picture(path: Path) -> str:
    """The snapshot's file, looked at here (the demo's devices are this machine): its whole path,
    its size and what it is, or that it is not there."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{_shown(path)} (not readable here: {exc.strerror})"
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return f"{_shown(path)} ({len(data)} bytes, not a PNG)"
    width, height = struct.unpack(">II", data[16:24])  # IHDR, the first chunk
    return f"{_shown(path)} ({len(data)} bytes, {width}x{height} PNG)"


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from catdog import use_inventory
    from ops import commands
    from ops.results import table

    inventory = write_inventory()
    print(f"== CatDog demo: launching 3 local devices from {_shown(inventory)}")
    status = commands.launch(str(inventory))
    if status != 0:
        print("\nThe fleet did not come up; see the reasons above.", file=sys.stderr)
        return status
    use_inventory(inventory)
    print("\n== Running tasks routed by device, by capability and to every device")
    print(table(run_tasks(), ("CALL", "DEVICE", "RESULT")))
    rel = _shown(inventory)
    print(f"""
== Where to look next
  .venv/bin/fab status --inventory {rel}     # a row per device: idle/busy, done, failed
  tmux -L {SOCKET} attach -t catdog-garden           # a worker's own output (Ctrl-b d leaves)
  CATDOG_INVENTORY={rel} .venv/bin/celery -A catdog inspect ping
  .venv/bin/fab stop --inventory {rel}       # warm shutdown, then the embedded Redis
  embedded Redis (data, append-only file, pid, port, log): {_shown(DEMO_DIR)}/.catdog/""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
