"""``python -m bench --profile field``: run the field profile (:mod:`bench.field`) in a process of
its own, print its tables (:mod:`bench.fieldreport`) and write ``bench/results-field.json``;
with ``--markdown`` measure nothing and print (or, with ``--page``, write) the tables."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from bench import markdown
from bench.fieldreport import END, RESULTS_NAME, START, render

RESULTS = Path(__file__).with_name(RESULTS_NAME)


def tables_in(page: str) -> str | None:
    """The field block of a page (between :data:`START` and :data:`END`), or None."""
    return markdown.tables_in(page, START, END)


def main(args: argparse.Namespace) -> int:
    from bench.cgroups import PI_ZERO_2W_FACTOR
    from bench.run import _exit_on_sigterm, isolated, machine

    output: Path = args.output or RESULTS
    if args.markdown:
        return markdown.show(output, render, args.page, "field tables",
                             "python -m bench --profile field", START, END)
    from bench import field

    _exit_on_sigterm()
    sizes = [int(n) for n in args.sizes.split(",")]
    links = [float(ms) for ms in args.links.split(",")]
    calls = args.calls or (20 if args.quick else 100)
    tasks = args.tasks or (10 if args.quick else 40)
    fanouts = args.fanouts if args.fanouts is not None else (3 if args.quick else 10)
    window = args.idle_window or (5.0 if args.quick else 60.0)
    print(f"field profile: sizes {sizes}, links {links} ms: starting...", file=sys.stderr,
          flush=True)
    found = isolated(field.run, sizes, links, calls, tasks, fanouts, window,
                     args.factor or PI_ZERO_2W_FACTOR)
    found.update({"machine": machine(), "quick": args.quick, "when": datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds")})
    output.write_text(json.dumps(found, indent=2) + "\n")
    print(render(found))
    print(f"\nwritten to {output}")
    return 1 if found["failures"] else 0
