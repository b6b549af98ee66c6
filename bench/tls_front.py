"""What the embedded Redis's TLS front costs: round trips to the same server, plain and through it.

``python -m bench.tls_front [--rounds N]`` starts an embedded Redis in a temporary folder with
``embedded: {tls: true}`` on ``127.0.0.2`` (loopback: the network adds nothing, so what is
measured is the front alone), then times, alternating plain and TLS in each round: a ``PING``
round trip (the mean of 20 back to back), a 100-command pipeline of ``SET``, a new raw
connection (connect, TLS handshake with one reused ``SSLContext``, ``AUTH``, ``PING``: the
front's own cost) and a new redis-py client's first ``PING`` (redis-py also builds an
``SSLContext`` per connection, loading the system's CAs: a client-side cost). Prints one JSON
document: medians and 95th percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis

from ops.embedded_redis import EmbeddedRedis, Listening

ADDRESS = "127.0.0.2"
PINGS = 20  # back to back per round: a round trip is the mean of these


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1000, 3),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3)}


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _pings(client: redis.Redis) -> None:
    for _ in range(PINGS):
        client.ping()


def _raw(where: tuple[str, int], password: str, context: ssl.SSLContext | None) -> None:
    """Connect (TLS when ``context``), AUTH, PING, close."""
    sock: socket.socket = socket.create_connection(where)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=where[0])
    with sock:
        for command in (f"AUTH {password}\r\n", "PING\r\n"):
            sock.sendall(command.encode())
            sock.recv(64)


def measure(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="catdog-tls-bench-") as folder:
        server = EmbeddedRedis(Path(folder) / ".catdog", Listening((ADDRESS,), tls=True))
        server.ensure_running()
        try:
            password = (server.dir / "redis.password").read_text().strip()
            options: dict[str, dict[str, Any]] = {
                "plain": {"host": "127.0.0.1", "port": server.port},
                "tls": {"host": ADDRESS, "port": server.tls_port(), "ssl": True,
                        "ssl_ca_certs": str(server.dir / "tls" / "ca.pem"),
                        "ssl_cert_reqs": "required"}}
            clients = {k: redis.Redis(password=password, **o) for k, o in options.items()}
            for client in clients.values():
                client.ping()  # connected before timing
            found: dict[str, dict[str, list[float]]] = {
                k: {"ping": [], "pipeline_100_set": [], "raw_connection": [],
                    "redis_py_connection": []} for k in clients}
            context = ssl.create_default_context(cafile=options["tls"]["ssl_ca_certs"])
            for _ in range(rounds):
                for kind, client in clients.items():
                    found[kind]["ping"].append(_timed(partial(_pings, client)) / PINGS)
                    pipe = client.pipeline(transaction=False)
                    for i in range(100):
                        pipe.set(f"bench:{i}", "x" * 64)
                    found[kind]["pipeline_100_set"].append(_timed(pipe.execute))
                    where = (options[kind]["host"], options[kind]["port"])
                    secure = context if kind == "tls" else None
                    found[kind]["raw_connection"].append(_timed(
                        partial(_raw, where, password, secure)))
                    fresh = redis.Redis(password=password, **options[kind])
                    found[kind]["redis_py_connection"].append(_timed(fresh.ping))
                    fresh.close()
            return {kind: {what: _ms(samples) for what, samples in measures.items()}
                    for kind, measures in found.items()} | {"rounds": rounds}
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    print(json.dumps(measure(parser.parse_args().rounds), indent=1))


if __name__ == "__main__":
    main()
