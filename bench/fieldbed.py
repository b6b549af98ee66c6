"""The field profile's test bed: local devices whose workers are Pi-sized (each in its own
cgroup: :mod:`bench.cgroups`) and reach Redis, as the producer does, through one delaying
proxy (:mod:`bench.delay_proxy`), so every broker command pays the link's round trip.

Each device has a cgroup per side (``d1-catdog``, ``d1-plain``), so one side's idle polling
never takes the other's CPU quota. Redis itself is reached directly only by the harness's own
counters (``INFO``), which then cost the link nothing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis

from bench.cgroups import PI_ZERO_2W_FACTOR, PiCgroups
from bench.delay_proxy import DelayProxy
from bench.testbed import ROOT, Bed, _inventory


@dataclass
class FieldBed:
    bed: Bed  # its broker_url goes through the proxy
    direct_url: str  # Redis itself, for the harness's counters
    proxy: DelayProxy
    cgroups: PiCgroups
    redis_pid: int
    plain_python: dict[str, str]  # device -> the plain side's interpreter (in its cgroup)

    def direct(self) -> redis.Redis:
        return redis.Redis.from_url(self.direct_url)

    def set_round_trip_ms(self, added_ms: float) -> None:
        """The link from now on adds ``added_ms`` to every round trip (half each way)."""
        self.proxy.set_delay(added_ms / 2)


@contextlib.contextmanager
def field_fleet(count: int, factor: float = PI_ZERO_2W_FACTOR,
                imports: tuple[str, ...] = ("bench.tasks",)) -> Iterator[FieldBed]:
    """``count`` Pi-sized local devices (``d1``..``dN``, capability ``bench``, solo pool) behind
    the proxy, on a private embedded Redis; cgroups and proxy removed after."""
    from bench.tmuxserver import end_server
    from ops.embedded_redis import EmbeddedRedis

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    with tempfile.TemporaryDirectory(prefix="catdog-field-") as tmp, \
            contextlib.ExitStack() as stack:
        folder = Path(tmp)
        server = EmbeddedRedis(folder / "broker")
        stack.callback(server.stop)
        direct = server.ensure_running()
        where = urlparse(direct)
        assert where.hostname and where.port
        proxy = stack.enter_context(DelayProxy(where.hostname, where.port))
        url = direct.replace(f"{where.hostname}:{where.port}", f"127.0.0.1:{proxy.port}")
        cgroups = PiCgroups(folder / "cgroups", factor)
        stack.callback(cgroups.close)  # last: after the workers and tmux are gone
        devices: dict[str, dict[str, Any]] = {
            f"d{i}": {"host": "local", "capabilities": ["bench"], "pool": "solo",
                      "concurrency": 1, "python": cgroups.python(f"d{i}-catdog"),
                      **({"allow_root": True} if os.geteuid() == 0 else {})}
            for i in range(1, count + 1)}
        plain = {name: cgroups.python(f"{name}-plain") for name in devices}
        bed = Bed("local", _inventory(folder, devices, url, imports), url)
        stack.callback(end_server, bed.inventory.tmux_socket)
        pid = int(redis.Redis.from_url(direct).info("server")["process_id"])
        yield FieldBed(bed, direct, proxy, cgroups, pid, plain)
