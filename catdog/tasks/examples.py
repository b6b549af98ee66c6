"""Example tasks used by the demo fleet: one per kind of routing."""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

from catdog import app
from catdog.fleet import fleet


def _where() -> dict[str, Any]:
    return {"device": fleet.device.name, "pid": os.getpid(), "host": socket.gethostname()}


@app.task(name="tasks.examples.whoami")
def whoami() -> dict[str, Any]:
    """Runs on any live device: says which one took it."""
    return _where()


@app.task(name="tasks.examples.snapshot", requires=("camera",))
def snapshot(resolution: str = "640x480") -> dict[str, Any]:
    """Pretends to take a picture; only devices with a camera get it."""
    return {**_where(), "picture": f"/tmp/catdog-{int(time.time() * 1000)}-{resolution}.jpg"}


@app.task(name="tasks.examples.read_temperature", requires=("sensor",))
def read_temperature(unit: str = "C") -> dict[str, Any]:
    """Reads the CPU temperature where the kernel exposes it (else reports none)."""
    if unit not in ("C", "F"):
        raise ValueError(f"unit must be 'C' or 'F', got {unit!r}")
    try:
        with open("/sys/class/thermal/thermal_zone0/temp") as f:
            celsius: float | None = int(f.read().strip()) / 1000
    except (OSError, ValueError):
        celsius = None
    value = celsius if celsius is None or unit == "C" else celsius * 9 / 5 + 32
    return {**_where(), "temperature": value, "unit": unit}


@app.task(name="tasks.examples.render", requires=("camera", "gpu"))
def render(frames: int = 1) -> dict[str, Any]:
    """Needs a camera and a GPU on the same device."""
    return {**_where(), "frames": int(frames), "machine": platform.machine()}


@app.task(name="tasks.examples.sleep")
def sleep(seconds: float) -> dict[str, Any]:
    """Sleeps; useful to see a device busy and work spread over idle devices."""
    time.sleep(float(seconds))
    return {**_where(), "slept_s": float(seconds)}
