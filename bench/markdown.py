"""``python -m bench --markdown``: the tables of ``docs/performance.md``, from a results file
(nothing is measured): one row per measure with CatDog's median and spread, plain Celery's, the
ratio CatDog / plain, the goal and whether this run met it. ``--page docs/performance.md`` puts
them into the page, between its two ``bench markdown tables`` comments (:func:`with_tables`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import FANOUT, KILL_SWITCH_S, PI_ZERO_RSS_MB, PROFILE

PROFILES = (("compare_solo", "solo"), ("compare_prefork", "prefork -c2"))
#: the page whose tables these are, and the comments around them there
PAGE = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
START, END = "<!-- bench markdown tables: start -->", "<!-- bench markdown tables: end -->"


def _cell(found: dict[str, Any] | None, unit: str = "") -> str:
    if not found:
        return "-"
    return f"{found['median']:.4g}{unit} ({found['min']:.4g}-{found['max']:.4g})"


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "**missed**")


def _comparison(results: dict[str, Any], suffix: str) -> list[str]:
    rows = ["| measure | CatDog | plain Celery | ratio | goal | |", "|---|---|---|---|---|---|"]
    for key, tag in PROFILES:
        found = results.get(key + suffix)
        if not found:
            continue
        for measure, (label, check, goal) in PROFILE.items():
            entry = found.get(measure)
            if not entry:
                continue
            met = check(entry["ratio"]) if check else None
            if measure == "rss_mb" and tag == "solo":
                goal, met = f"CatDog <= {PI_ZERO_RSS_MB:g} MB", (
                    entry["catdog"]["median"] <= PI_ZERO_RSS_MB)
            rows.append(f"| {label}, {tag} | {_cell(entry.get('catdog'))} | "
                        f"{_cell(entry.get('plain'))} | {entry['ratio']:.2f} | {goal} | "
                        f"{_verdict(met)} |")
    for key in ("fanout", "fanout_per_core"):
        found = results.get(key + suffix)
        if not found:
            continue
        for measure, label in FANOUT.items():
            entry = found.get(measure)
            if not entry:
                continue
            goal, met = ("1 round trip", entry["catdog"]["median"] <= 1) if measure == "writes" \
                else ("", None)
            rows.append(f"| fan-out to {found['devices']}: {label} | {_cell(entry['catdog'])} | "
                        f"{_cell(entry['plain'])} | {entry['ratio']:.2f} | {goal} | "
                        f"{_verdict(met)} |")
    return rows


def _own(results: dict[str, Any]) -> list[str]:
    """CatDog's own measures (nothing to compare with)."""
    rows = ["| measure | median (min-max) | goal | |", "|---|---|---|---|"]
    launch = results.get("launch")
    if launch:
        for n in launch.get("sizes", [1, launch["devices"]]):
            rows.append(f"| `fab launch` of {n} over SSH | {_cell(launch[f'launch_{n}_s'], ' s')}"
                        f" | | |")
        many = launch["devices"]
        rows.append(f"| launch {many} / launch 1 | {launch['ratio']:.2f} | <= 1.5 | "
                    f"{_verdict(launch['ratio'] <= 1.5)} |")
        delay = launch.get("serve_to_ready_s")
        if delay:
            rows.append(f"| worker can serve -> READY | {_cell(delay, ' s')} | <= 0.3 s | "
                        f"{_verdict(delay['max'] <= 0.3)} |")
    status = results.get("status")
    if status:
        rows.append(f"| `fab status`, {status['devices']} devices, in the process | "
                    f"{status['median_ms']:.1f} ms (p95 {status['p95_ms']:.1f}, max "
                    f"{status['max_ms']:.1f}) | <= 50 ms | {_verdict(status['max_ms'] <= 50)} |")
    switch = results.get("killswitch")
    if switch:
        for key, label in (("on_to_last_start_s", "kill switch: `--on` returned -> last start"),
                           ("off_to_first_start_s", "kill switch: `--off` returned -> first "
                                                    "start")):
            entry = switch[key]
            rows.append(f"| {label} | {_cell(entry, ' s')} | <= {KILL_SWITCH_S:g} s | "
                        f"{_verdict(entry['max'] <= KILL_SWITCH_S)} |")
    return rows


def render(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    out = [f"Run of {results.get('when', '?')} on {machine.get('cpu', '?')}, "
           f"{machine.get('cores', '?')} cores, Python {machine.get('python', '?')}, "
           f"{machine.get('system', '?')}" + (" (--quick)" if results.get("quick") else "") + ".",
           "", "CatDog against plain Celery with Celery's default settings:", "",
           *_comparison(results, "")]
    if any(key.endswith("_same_settings") for key in results):
        out += ["", "CatDog against plain Celery with CatDog's settings (only the layer differs):",
                "", *_comparison(results, "_same_settings")]
    out += ["", "CatDog's own:", "", *_own(results)]
    return "\n".join(out)


def tables_in(page: str, start: str = START, end: str = END) -> str | None:
    """The generated block of a page (between ``start`` and ``end``, without them), or None."""
    _, found_start, rest = page.partition(start)
    body, found_end, _ = rest.partition(end)
    return body.strip("\n") if found_start and found_end else None


def with_tables(page: str, tables: str, start: str = START, end: str = END) -> str:
    """The page with its generated block replaced by ``tables``; ValueError without the block."""
    if tables_in(page, start, end) is None:
        raise ValueError(f"no {start} ... {end} block to put the tables in")
    head, _, rest = page.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{tables}\n{end}{tail}"


def show(output: Path, render: Callable[[dict[str, Any]], str], page: Path | None, what: str,
         run_first: str, start: str = START, end: str = END) -> int:
    """``--markdown``: print the tables of the results file ``output`` (``render``), or write them
    into ``page`` between ``start`` and ``end``; 2 with one line on stderr when either is amiss."""
    if not output.exists():
        print(f"no results at {output}: run {run_first} first", file=sys.stderr)
        return 2
    tables = render(json.loads(output.read_text()))
    if page is None:
        print(tables)
        return 0
    try:
        page.write_text(with_tables(page.read_text(), tables, start, end))
    except (OSError, ValueError) as exc:
        print(f"{page}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote the {what} into {page}", file=sys.stderr)
    return 0
