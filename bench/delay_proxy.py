"""A delaying TCP proxy for the field profile: every byte that passes it, in either direction,
is held for a one-way delay before it is sent on, so a round trip through it gains twice that
(1 ms each way: the 2 ms of a LAN; 5 ms: the 10 ms of Wi-Fi under load). This kernel has no
netem, hence the proxy.

``python -m bench.delay_proxy --target HOST:PORT`` listens on a free loopback port, prints
``port N`` on stdout, and then reads commands on stdin: ``delay MS`` sets the one-way delay of
every connection (open ones included), ``quit`` (or the end of stdin) stops it. It runs in its
own process, so the producer and workers it serves do not share its interpreter. Order is kept
per direction: data waits in one queue per direction and leaves in the order it came.

:class:`DelayProxy` starts and drives that process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import subprocess
import sys
import time
from types import TracebackType

READ_CHUNK = 65536


class _Link:
    """One direction of one connection: what came in, each with the time it may leave."""

    def __init__(self, writer: asyncio.StreamWriter, delay: list[float]) -> None:
        self.writer, self.delay = writer, delay
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False

    def push(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self.delay[0] <= 0 and not self.queue:
            self.writer.write(data)
            return
        self.queue.append((loop.time() + self.delay[0], data))
        if self.timer is None:
            self.timer = loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = None
        now = loop.time()
        while self.queue and self.queue[0][0] <= now:
            self.writer.write(self.queue.popleft()[1])
        if self.queue:
            self.timer = loop.call_at(self.queue[0][0], self.flush)
        elif self.closing:
            self.writer.close()

    def close(self) -> None:
        self.closing = True
        if not self.queue:
            self.writer.close()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pump(reader: asyncio.StreamReader, link: _Link) -> None:
    try:
        while data := await reader.read(READ_CHUNK):
            link.push(data)
    except (ConnectionError, OSError):
        pass
    finally:
        link.close()


async def _serve(target: tuple[str, int], delay: list[float]) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        for writer in (client_w, server_w):
            _no_delay(writer)
        with contextlib.suppress(asyncio.CancelledError):  # the proxy stops
            await asyncio.gather(_pump(client_r, _Link(server_w, delay)),
                                 _pump(server_r, _Link(client_w, delay)))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "delay":
            delay[0] = float(words[1]) / 1000
            print(f"delay {words[1]}", flush=True)
    server.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.delay_proxy", description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT of the server (Redis)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay (ms)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    asyncio.run(_serve((host, int(port)), [args.delay_ms / 1000]))
    return 0


class DelayProxy:
    """The proxy's process in front of ``host:port``; :attr:`port` is where clients connect."""

    def __init__(self, host: str, port: int, one_way_ms: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.delay_proxy", "--target", f"{host}:{port}",
             "--delay-ms", str(one_way_ms)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, start_new_session=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        if first[:1] != ["port"]:
            self.close()
            raise RuntimeError(f"the delay proxy did not start: {first}")
        self.port = int(first[1])
        self.one_way_ms = one_way_ms

    def set_delay(self, one_way_ms: float) -> None:
        """Every connection's one-way delay from now on (answered once it is in force)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"delay {one_way_ms}\n")
        self.proc.stdin.flush()
        self.proc.stdout.readline()
        self.one_way_ms = one_way_ms
        time.sleep(0.05)  # data already queued under the old delay drains

    def cpu_s(self) -> float:
        """The proxy's own CPU seconds so far (user + system)."""
        from bench.cpu import tree_cpu_s

        return tree_cpu_s(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


if __name__ == "__main__":
    raise SystemExit(main())
