"""The embedded Redis's TLS front: accepts ``rediss://`` on the LAN and relays to the plain Redis.

The redis-server CatDog bundles is built without TLS (and no wheel offers one that is), so with
``embedded: {tls: true}`` this small process runs beside it, part of its lifecycle: started,
checked and stopped with it (:class:`~ops.embedded_redis.EmbeddedRedis`), its pid in
``.catdog/tls-front.pid`` and its log in ``.catdog/tls-front.log``. The plain Redis then
listens on loopback only; the front listens on the LAN addresses, terminates TLS with the
certificate of :mod:`ops.certs`, and copies bytes both ways to ``127.0.0.1:<redis port>``:
passwords and ACLs stay Redis's own.

``python -m ops.tls_front STATE_DIR`` binds every address of ``tls-front.json`` first (so a bad
address fails at once, with exit status 1 and the reason on stderr), then forks: the parent
records the child's pid and exits 0; the child serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

from ops.files import write_private

CONFIG_FILE = "tls-front.json"
PID_FILE = "tls-front.pid"
LOG_FILE = "tls-front.log"
CHUNK = 65536


def write_config(state_dir: Path, listen: tuple[str, ...], port: int, upstream: int,
                 cert: Path, key: Path) -> None:
    write_private(state_dir / CONFIG_FILE, json.dumps({
        "listen": list(listen), "port": port, "upstream": upstream, "cert": str(cert),
        "key": str(key)}, indent=1) + "\n")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError, RuntimeError):
            writer.close()


async def _relay(upstream: int, client_r: asyncio.StreamReader,
                 client_w: asyncio.StreamWriter) -> None:
    try:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", upstream)
    except OSError:  # Redis is down: the client sees its connection closed, and retries
        client_w.close()
        return
    await asyncio.gather(_pipe(client_r, redis_w), _pipe(redis_r, client_w))


async def _serve(config: dict[str, Any], listeners: list[socket.socket]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config["cert"], config["key"])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _relay(int(config["upstream"]), reader, writer)

    servers = [await asyncio.start_server(handle, sock=s, ssl=context, ssl_handshake_timeout=10)
               for s in listeners]
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()
    for server in servers:
        server.close()


def _bind(listen: list[str], port: int) -> list[socket.socket]:
    listeners = []
    for address in listen:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        # IPPROTO_TCP named: asyncio then sets TCP_NODELAY on each accepted connection (with
        # protocol 0 it does not, and Nagle's wait for the client's delayed ACK adds 40 ms to the
        # first reply of every connection)
        s = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(128)
        s.setblocking(False)
        listeners.append(s)
    return listeners


def main(argv: list[str]) -> int:
    state_dir = Path(argv[0])
    config = json.loads((state_dir / CONFIG_FILE).read_text())
    try:
        listeners = _bind(config["listen"], int(config["port"]))
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            config["cert"], config["key"])
    except (OSError, ssl.SSLError) as exc:
        print(f"the TLS front cannot listen on {', '.join(config['listen'])} port "
              f"{config['port']}: {exc}", file=sys.stderr)
        return 1
    child = os.fork()
    if child:
        write_private(state_dir / PID_FILE, f"{child}\n")
        return 0
    os.setsid()
    with open(os.devnull) as null, open(state_dir / LOG_FILE, "a") as log:
        os.dup2(null.fileno(), 0)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    asyncio.run(_serve(config, listeners))
    with contextlib.suppress(OSError):
        (state_dir / PID_FILE).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
