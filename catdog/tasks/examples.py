"""Example tasks used by the demo fleet: one per kind of routing."""

from __future__ import annotations

import os
import platform
import re
import socket
import struct
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from catdog import app
from catdog.fleet import fleet

#: the largest picture side snapshot takes (a 4096x4096 picture is 48 MB before compression)
MAX_SIDE = 4096


def _where() -> dict[str, Any]:
    return {"device": fleet.device.name, "pid": os.getpid(), "host": socket.gethostname()}


@app.task(name="tasks.examples.whoami")
def whoami() -> dict[str, Any]:
    """Runs on any live device: says which one took it."""
    return _where()


def _size(resolution: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,4})x(\d{1,4})", resolution)
    width, height = (int(match[1]), int(match[2])) if match else (0, 0)
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ValueError(f"resolution must be WIDTHxHEIGHT, each 1..{MAX_SIDE}, like 640x480; "
                         f"got {resolution!r}")
    return width, height


def colour_bars(width: int, height: int) -> bytes:
    """A PNG of eight colour bars (stdlib only: a real image where the device has no camera)."""
    bars = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255),
            (255, 0, 0), (0, 0, 255), (0, 0, 0)]
    row = b"\x00" + b"".join(bytes(bars[x * len(bars) // width]) for x in range(width))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(row * height, 9)) + chunk(b"IEND", b""))


@app.task(name="tasks.examples.snapshot", requires=("camera",))
def snapshot(resolution: str = "640x480") -> dict[str, Any]:
    """Takes a picture (colour bars: no camera driver here) into ``.catdog/pictures/`` of the
    device's workdir; only devices with a camera get it. Returns the file's path on the device."""
    width, height = _size(resolution)
    folder = Path.cwd() / ".catdog" / "pictures"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"snapshot-{stamp}-{uuid.uuid4().hex[:6]}-{width}x{height}.png"
    path.write_bytes(colour_bars(width, height))
    return {**_where(), "picture": str(path), "bytes": path.stat().st_size}


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
    """Needs a camera and a GPU on the same device: encodes ``frames`` 64x48 colour-bar pictures in
    memory (on the CPU) and says how many bytes they came to."""
    encoded = sum(len(colour_bars(64, 48)) for _ in range(int(frames)))
    return {**_where(), "frames": int(frames), "png_bytes": encoded,
            "machine": platform.machine()}


@app.task(name="tasks.examples.sleep")
def sleep(seconds: float) -> dict[str, Any]:
    """Sleeps; useful to see a device busy and work spread over idle devices."""
    time.sleep(float(seconds))
    return {**_where(), "slept_s": float(seconds)}
