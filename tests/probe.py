"""A task module the test workers import (``imports:``), whose tasks record each start in Redis:
``"<n> <time> <device>"`` pushed to ``<module>:starts``, so tests can see when and where tasks
really started, and how often. ``soak`` keeps trying to record its start for two minutes (the
soak kills the broker and cuts links while tasks start)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import redis

SOURCE = '''
import os, time
import redis
from catdog import app
from catdog.fleet import fleet

_client = None


def _note(n):
    global _client
    for attempt in (1, 2):  # a connection left dead by a long network cut: once more, anew
        _client = _client or redis.Redis.from_url(os.environ["CATDOG_BROKER_URL"])
        try:
            _client.rpush("{module}:starts", f"{{n}} {{time.time()}} {{fleet.device.name}}")
            return
        except redis.ConnectionError:
            _client = None
            if attempt == 2:
                raise


def _note_surely(n):
    global _client
    deadline = time.monotonic() + 120
    while True:
        _client = _client or redis.Redis.from_url(os.environ["CATDOG_BROKER_URL"])
        try:
            _client.rpush("{module}:starts", f"{{n}} {{time.time()}} {{fleet.device.name}}")
            return
        except redis.ConnectionError:  # the broker restarting (or loading its data), a cut link
            _client = None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@app.task(name="{module}.soak")
def soak(n, seconds=0.0):
    _note_surely(n)
    time.sleep(seconds)
    return n


@app.task(name="{module}.record")
def record(n, seconds=0.0):
    _note(n)
    time.sleep(seconds)
    return n


@app.task(name="{module}.stoppable")
def stoppable(n, seconds):
    from celery.exceptions import SoftTimeLimitExceeded
    _note(n)
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return {{"stopped_at": time.time()}}
    return {{"finished_at": time.time()}}


@app.task(name="{module}.limited", limit="burst")
def limited(n, seconds=0.0):
    _note(n)
    time.sleep(seconds)
    return n
'''


def write_probe(folders: list[Path], module: str) -> ModuleType:
    """Write the module into each folder (workers run there) and import it here too."""
    for folder in folders:
        (folder / f"{module}.py").write_text(SOURCE.format(module=module))
    sys.path.insert(0, str(folders[0]))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(folders[0]))


def starts(client: redis.Redis, module: str) -> list[tuple[int, float, str]]:
    rows = [raw.decode().split() for raw in client.lrange(f"{module}:starts", 0, -1)]
    return [(int(n), float(t), d) for n, t, d in rows]
