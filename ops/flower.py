"""Flower for the fleet: ``python -m ops.flower --inventory P --env-file F --port N --address A``
(``fab flower`` starts it in tmux session ``catdog-flower``).

The env file (mode 600) brings the broker URL and, when set, ``FLOWER_BASIC_AUTH``: Flower reads
its options from ``FLOWER_*`` variables, so no secret is on a command line. On loopback without
authentication ``FLOWER_UNAUTHENTICATED_API`` is set, or Flower 2 would answer its API with 401.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path

AUTH_ENV = "CATDOG_FLOWER_AUTH"  # user:password (several: comma-separated), from the environment
DEFAULT_PORT = 5555
DEFAULT_ADDRESS = "127.0.0.1"


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    from catdog import edge

    parser = argparse.ArgumentParser(prog="python -m ops.flower", description=__doc__)
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--env-file")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--address", default=DEFAULT_ADDRESS)
    args = parser.parse_args(argv)  # exits 2 on misuse
    return edge.run("catdog flower", lambda: serve(args))


def serve(args: argparse.Namespace) -> int:
    from catdog.errors import UsageError
    from catdog.fleet import fleet
    from catdog.loader import load_inventory
    from workers.cli import load_env_file

    if args.env_file:
        load_env_file(Path(args.env_file))
    if not os.environ.get("FLOWER_BASIC_AUTH"):
        if not is_loopback(args.address):
            raise UsageError(f"refusing to serve {args.address} without authentication; "
                             f"export {AUTH_ENV}=user:password")
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    fleet.use_loaded(load_inventory(args.inventory))  # a bad one is one line, before Flower starts
    from catdog import app

    return int(app.start(["flower", f"--port={args.port}", f"--address={args.address}"]) or 0)


if __name__ == "__main__":
    sys.exit(main())
