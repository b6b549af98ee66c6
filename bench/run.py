"""``python -m bench [--quick] [--only NAME]``: run the benchmarks, print a table, write
``bench/results.json`` (with the machine it ran on)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import multiprocessing
import os
import platform
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results.json")


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def launch_table(found: dict[str, Any]) -> list[str]:
    many, cores = found["devices"], found["cores"]
    sizes = found.get("sizes", [1, many])
    delay, cpu = found["serve_to_ready_s"], found["worker_start_cpu_s"]
    lines = [f"fab launch over SSH ({found['testbed']} testbed, {found['rounds']} rounds, "
             f"{cores} cores)"]
    for n in sizes:
        wall, busy = found[f"launch_{n}_s"], found[f"machine_busy_{n}"]
        label = f"launch {n} device{'s' * (n > 1)}"
        lines.append(f"  {label:<24} median {wall['median']:.2f}s  (min {wall['min']:.2f}, "
                     f"max {wall['max']:.2f})  ratio {found[f'ratio_{n}']:.2f}  cores busy "
                     f"{busy['median']:.0%}  coordinator CPU "
                     f"{found[f'coordinator_cpu_{n}_s']['median']:.2f}s")
    lines.append(f"  {f'ratio {many}/1':<24} {found['ratio']:.2f}   (goal <= 1.5)")
    lines.append(f"  serve -> READY           median {delay['median']:.3f}s  max "
                 f"{delay['max']:.3f}s (goal <= 0.3)" if delay else "  serve -> READY  not measured")
    if cpu:
        lines.append(f"  worker start CPU         median {cpu['median']:.2f}s each; {many} on "
                     f"{cores} cores need >= {found['cpu_bound_s']:.2f}s")
    lines += [f"  FAILED {f}" for f in found["failures"]]
    return lines


#: how long a benchmark's process may take to exit once it has sent its results
CHILD_EXIT_S = 30.0


def isolated(benchmark: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run one benchmark in a fresh process: each builds its own fleet and broker, and a Celery
    app's broker is fixed once per process. A run stopped meanwhile (Ctrl-C, or SIGTERM to this
    process) stops the benchmark's process too, whose cleanups then stop its fleet and Redis."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_run_child, args=(send, benchmark, args))
    child.start()
    send.close()
    try:
        outcome, value = receive.recv()
        child.join(CHILD_EXIT_S)  # its exit handlers run undisturbed (a SIGTERM in them is noise)
    except EOFError:  # it died without a word (killed, or out of memory)
        child.join()
        outcome, value = "error", f"its process died (exit status {child.exitcode})"
    finally:
        if child.is_alive():
            child.terminate()  # SIGTERM: _run_child turns it into SystemExit, cleanups run
        child.join()
    if outcome != "ok":
        raise RuntimeError(f"{benchmark.__module__}.{benchmark.__name__} failed:\n{value}")
    return dict(value)


def _exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so ``finally`` blocks and context managers still run."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def _run_child(send: Any, benchmark: Callable[..., dict[str, Any]], args: tuple[Any, ...]
               ) -> None:
    _exit_on_sigterm()
    try:
        send.send(("ok", benchmark(*args)))
    except Exception:
        send.send(("error", traceback.format_exc()))


PLAIN = {"defaults": "Celery's default settings",
         "catdog": "CatDog's celeryconfig settings (only CatDog's layer differs)"}
#: worker profiles compared: the Pi Zero one (solo, one process) and the default (prefork -c2)
PROFILES = {"solo": ("solo", 1), "prefork": ("prefork", 2)}
COMPARED = ("throughput", "latency", "memory")
CHOICES = ["compare", *COMPARED, "fanout", "killswitch", "launch", "placement", "rollout",
           "status"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and tasks (a minute "
                                                              "or two)")
    parser.add_argument("--only", choices=CHOICES, help="run one benchmark (throughput, latency "
                                                         "and memory are measured together)")
    parser.add_argument("--rounds", type=int, help="rounds per benchmark (default 5, quick 2)")
    parser.add_argument("--devices", type=int, default=8, help="the fleet size to compare with 1, "
                                                               "and to fan out to")
    parser.add_argument("--tasks", type=int, help="tasks per throughput run (default 5000, "
                                                  "quick 1000)")
    parser.add_argument("--calls", type=int, help="sequential calls per latency run (default "
                                                  "500, quick 200)")
    parser.add_argument("--pools", default=",".join(PROFILES),
                        help="worker profiles to compare (solo: the Pi Zero one; prefork -c2)")
    parser.add_argument("--plain", choices=("defaults", "catdog"), default="defaults",
                        help="the plain side's settings: Celery's defaults (default), or "
                             "CatDog's celeryconfig (then only CatDog's layer differs)")
    parser.add_argument("--loglevel", help="both sides' workers log at this level (default: "
                                           "each side's own: CatDog INFO, plain Celery WARNING)")
    parser.add_argument("--profile", choices=("loopback", "field"), default="loopback",
                        help="loopback (default: every device a full core here, Redis on "
                             "loopback) or field: Pi-sized devices behind a delaying link "
                             "(bench/results-field.json; see docs/performance.md)")
    parser.add_argument("--sizes", default="1,8,32", help="field: the fleet sizes")
    parser.add_argument("--links", default="0,2,10", help="field: ms each link adds to a round "
                                                          "trip")
    parser.add_argument("--factor", type=float, help="field: this machine's core / a Pi Zero "
                                                     "2W's (default 8)")
    parser.add_argument("--idle-window", type=float,
                        help="field: seconds of idle traffic counted (default 60, a whole "
                             "number of every periodic check; quick 5)")
    parser.add_argument("--fanouts", type=int, help="field: fan-outs per side and link "
                                                    "(default 10, quick 3)")
    parser.add_argument("--output", type=Path, help="results file (default bench/results.json, "
                                                    "field: bench/results-field.json)")
    parser.add_argument("--markdown", action="store_true", help="measure nothing: print the "
                                                                 "results file as the tables of "
                                                                 "docs/performance.md")
    parser.add_argument("--page", type=Path, help="with --markdown: write the tables into this "
                                                  "page (docs/performance.md) between its "
                                                  "bench markdown tables comments, not on stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.profile == "field":
        from bench.fieldrun import main as field_main

        return field_main(args)
    args.output = args.output or RESULTS
    if args.markdown:
        from bench.markdown import render, show

        return show(args.output, render, args.page, "tables", "python -m bench")
    from bench import compare, killswitch, launch, report, status

    _exit_on_sigterm()
    results: dict[str, Any] = {}
    if args.output.exists():
        results = json.loads(args.output.read_text())
    results["machine"] = machine()
    results["when"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results["quick"] = args.quick
    rounds = args.rounds or (2 if args.quick else 5)
    from bench.plain import SETTINGS_ENV

    os.environ[SETTINGS_ENV] = args.plain  # the benchmarks' processes and workers inherit it
    plain = "" if args.plain == "defaults" else "_same_settings"
    wanted = {args.only} if args.only else set(CHOICES)
    if wanted & set(COMPARED):
        wanted.add("compare")
    failed = False
    if "compare" in wanted or "fanout" in wanted:
        print("\n".join(report.header(
            f"CatDog / plain Celery ({rounds} rounds, both sides up, calls interleaved, same "
            f"Redis; plain Celery with {PLAIN[args.plain]})")))
    if "compare" in wanted:
        tasks = args.tasks or (1000 if args.quick else 5000)
        calls = args.calls or (200 if args.quick else 500)
        for name in args.pools.split(","):
            pool, concurrency = PROFILES[name]
            print(f"compare {name}: starting fleets...", file=sys.stderr, flush=True)
            key = f"compare_{name}{plain}" + (f"_{args.loglevel.lower()}" if args.loglevel else "")
            found = results[key] = isolated(compare.run, pool, concurrency, rounds, tasks, calls,
                                            args.loglevel)
            print("\n".join(report.profile_rows(found, pi_zero=pool == "solo")), flush=True)
    if "fanout" in wanted:
        # to the fleet, and (when the fleet is larger) to one device per core: here every
        # "device" shares this machine's cores, which a real fleet's devices do not
        per_core = os.cpu_count() or 1
        sizes = {f"fanout{plain}": args.devices, **({f"fanout_per_core{plain}": per_core}
                                            if 1 < per_core < args.devices else {})}
        for key, size in sizes.items():
            print(f"fanout to {size}: starting fleets...", file=sys.stderr, flush=True)
            found = results[key] = isolated(compare.run_fanout, rounds,
                                            10 if args.quick else 30, size)
            print("\n".join(report.fanout_rows(found)), flush=True)
    if "killswitch" in wanted:
        print("killswitch: starting a local fleet...", file=sys.stderr, flush=True)
        found = results["killswitch"] = isolated(killswitch.run, rounds)
        print("\n".join(report.killswitch_rows(found)), flush=True)
        failed |= bool(found["failures"])
    if "launch" in wanted:
        print("launch: starting fleets...", file=sys.stderr, flush=True)
        results["launch"] = isolated(launch.run, rounds, args.devices)
        print("\n".join(line for line in launch_table(results["launch"]) if line))
        failed |= bool(results["launch"]["failures"])
    if "placement" in wanted:
        from bench import placement

        found = results["placement"] = isolated(placement.run, 500 if args.quick else 2000)
        print("\n".join(placement.rows(found)), flush=True)
    if "rollout" in wanted:
        from bench import rollout

        print("rollout: starting SSH devices...", file=sys.stderr, flush=True)
        found = results["rollout"] = isolated(rollout.run, args.devices)
        print("\n".join(rollout.rows(found)), flush=True)
        failed |= bool(found["failures"])
    if "status" in wanted:
        print("status: starting a local fleet...", file=sys.stderr, flush=True)
        found = results["status"] = isolated(status.run, 50 if args.quick else 200, args.devices)
        print(f"fab status for {found['devices']} live devices, in the process: median "
              f"{found['median_ms']:.1f} ms, p95 {found['p95_ms']:.1f} ms, max "
              f"{found['max_ms']:.1f} ms over {found['samples']} (goal < 50 ms)")
        failed |= bool(found["failures"])
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.output}")
    return 1 if failed else 0
