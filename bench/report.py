"""The comparison table: per measure, each side's median and spread, the ratio CatDog / plain,
the goal of issue 7, and whether it was met."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: measure key of a worker profile -> label, and the goal on the ratio CatDog / plain
PROFILE: dict[str, tuple[str, Callable[[float], bool] | None, str]] = {
    "tasks_per_s": ("throughput (tasks/s)", lambda r: r >= 1.0, "ratio >= 1.0"),
    "p50": ("round trip p50 (ms)", lambda r: r <= 1.0, "ratio <= 1.0"),
    "p95": ("round trip p95 (ms)", None, ""),
    "p99": ("round trip p99 (ms)", None, ""),
    "rss_mb": ("idle RSS per worker (MB)", None, ""),
    "pss_mb": ("idle PSS per worker (MB)", None, ""),
    "worker_cpu_us": ("worker CPU per task (us)", None, ""),
    "producer_cpu_us": ("producer CPU per task (us)", None, ""),
    "commands_per_task": ("Redis commands per task", None, ""),
}
FANOUT = {"producer_ms": "producer (ms)", "total_ms": "total (ms)",
          "writes": "broker round trips", "subscriptions": "result subscriptions"}
#: absolute goals: the Pi Zero profile's idle RSS, the kill switch's delays
PI_ZERO_RSS_MB = 60.0
KILL_SWITCH_S = 2.0


def _cell(found: dict[str, Any] | None) -> str:
    if not found:
        return "-"
    return f"{found['median']:.4g} ({found['min']:.4g}-{found['max']:.4g})"


def _row(label: str, entry: dict[str, Any], goal: str, met: bool | None) -> str:
    ratio = f"{entry['ratio']:.2f}" if entry.get("ratio") is not None else "-"
    verdict = "" if met is None else ("met" if met else "MISSED")
    return (f"  {label:<36} {_cell(entry.get('catdog')):<26} {_cell(entry.get('plain')):<26} "
            f"{ratio:>6}  {goal:<22} {verdict}")


def header(title: str) -> list[str]:
    return [title, f"  {'measure':<36} {'CatDog median (min-max)':<26} "
                   f"{'plain median (min-max)':<26} {'ratio':>6}  {'goal':<22}"]


def profile_rows(found: dict[str, Any], pi_zero: bool) -> list[str]:
    """Throughput, latency and memory of one worker profile."""
    tag = f"{found['pool']} -c{found['concurrency']}"
    lines = []
    for key, (label, check, goal) in PROFILE.items():
        entry = found.get(key)
        if not entry:
            continue
        met = check(entry["ratio"]) if check and entry.get("ratio") is not None else None
        if key == "rss_mb" and pi_zero:
            goal = f"CatDog <= {PI_ZERO_RSS_MB:g} MB"
            met = entry["catdog"]["median"] <= PI_ZERO_RSS_MB
        lines.append(_row(f"{label} {tag}", entry, goal, met))
    return lines


def fanout_rows(found: dict[str, Any]) -> list[str]:
    lines = []
    for key, label in FANOUT.items():
        entry = found.get(key)
        if not entry:
            continue
        goal, met = "", None
        if key == "writes":
            goal, met = "CatDog: 1 round trip", entry["catdog"]["median"] <= 1
        lines.append(_row(f"fan-out to {found['devices']}: {label}", entry, goal, met))
    return lines


def killswitch_rows(found: dict[str, Any]) -> list[str]:
    lines = [f"kill switch (CatDog only; {found['devices']} solo devices, {found['tasks']} tasks "
             f"of {found['task_s']}s, {found['rounds']} rounds)"]
    for key, label in (("on_to_last_start_s", "--on returned -> last start (s)"),
                       ("off_to_first_start_s", "--off returned -> first start (s)"),
                       ("engage_s", "engage call (s)")):
        entry = found.get(key)
        if entry:
            met = entry["max"] <= KILL_SWITCH_S if key != "engage_s" else None
            goal = f"<= {KILL_SWITCH_S:g} s" if met is not None else ""
            lines.append(f"  {label:<36} {_cell(entry):<26} {'':<26} {'':>6}  {goal:<22} "
                         + ("" if met is None else "met" if met else "MISSED"))
    return lines
