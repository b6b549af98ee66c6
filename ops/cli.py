"""``catdog``: the command that starts a project of your own (``catdog init [DIR]``).

The fleet's commands are ``fab``'s (``fab --list`` in a project folder). This one needs nothing
beyond the standard library, so it works with the device side alone installed too, though ``fab``
comes only with the coordinator extra. Exit status: 0 done, 1 a file would be overwritten (nothing
written) or the folder cannot be written, 2 a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ops.starter import FILES, StarterExists, next_steps, write_starter

PROG = "catdog"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG, description="CatDog: run Python tasks on a fleet of small devices. The fleet's "
                               "commands are fab's: run `fab --list` in a project folder.")
    top.add_argument("--version", action="version", version=f"catdog {_version()}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    init = commands.add_parser(
        "init", help="write a starter project into DIR", description=(
            f"Write a starter project into DIR (default: the current folder): "
            f"{', '.join(FILES)}. Never overwrites a file: if any of them exists, nothing is "
            f"written."))
    init.add_argument("dir", nargs="?", default=".", metavar="DIR",
                      help="the project folder (created if missing; default: .)")
    return top


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("catdog")
    except PackageNotFoundError:  # a checkout that was never installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))  # exits 2 on misuse
    folder = Path(args.dir)
    try:
        written = write_starter(folder)
    except StarterExists as exc:
        print(f"catdog init: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"catdog init: cannot write the starter into {folder}: {exc}", file=sys.stderr)
        return 1
    for path in written.files:
        print(f"wrote {path}")
    print(next_steps(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
