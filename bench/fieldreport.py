"""The field profile's tables (markdown, printed after a run and written into
``docs/performance.md`` by ``python -m bench --profile field --markdown --page ...``): per fleet
size and link, CatDog against plain Celery with the ratio, the goal of issue 18 and whether it
was met; then CatDog's own measures, and the idle worker on the Pi profile."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RESULTS_NAME = "results-field.json"
START = "<!-- bench field tables: start -->"
END = "<!-- bench field tables: end -->"
#: the Wi-Fi link (ms added per round trip) the goals are set on
WIFI = "10"
IDLE_COMMANDS_PER_S = 3.0
STATUS_MS = 50.0
LAUNCH_RATIO = 1.5
READY_S = 0.3

Goal = tuple[str, Callable[[dict[str, Any]], bool | None]] | None


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "**missed**")


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def _goal(key: str, link: str) -> Goal:
    def ratios(per: dict[str, Any]) -> dict[str, Any]:
        return dict(per["ratios"])

    if key == "p50" and link == WIFI:
        return "ratio <= 0.75", lambda per: (ratios(per).get("p50") or 9) <= 0.75
    if key == "p50_to_floor" and link == WIFI:
        return "CatDog <= 1.5", lambda per: per["catdog"]["p50_to_floor"] <= 1.5
    if key == "tasks_per_s" and link == WIFI:
        return "ratio >= 2", lambda per: (ratios(per).get("tasks_per_s") or 0) >= 2
    if key == "tasks_per_s" and link == "0":
        return "ratio >= 1", lambda per: (ratios(per).get("tasks_per_s") or 0) >= 1
    return None


ROWS = (("p50", "round trip p50 (ms)"), ("p95", "round trip p95 (ms)"),
        ("p50_to_floor", "round trip p50 / floor"), ("tasks_per_s", "throughput, fleet (tasks/s)"),
        ("per_device_tasks_per_s", "throughput per device (tasks/s)"),
        ("commands_per_task", "Redis commands per task"),
        ("fanout_producer_ms", "`all:` fan-out: producer (ms)"),
        ("fanout_total_ms", "`all:` fan-out: all results in (ms)"),
        ("fanout_writes", "`all:` fan-out: producer's round trips"))


def _value(entry: Any) -> Any:
    return entry["median"] if isinstance(entry, dict) else entry


def compared(found: dict[str, Any]) -> list[str]:
    rows = ["| devices | link | measure | CatDog | plain Celery | ratio | goal | |",
            "|---|---|---|---|---|---|---|---|"]
    for size in found["sizes"]:
        at = found.get(f"size_{size}", {})
        for link in (f"{ms:g}" for ms in found["links_ms"]):
            per = at.get(f"link_{link}")
            if not per:
                continue
            for key, label in ROWS:
                if key not in per["catdog"]:
                    continue
                mine, theirs = _value(per["catdog"][key]), _value(per["plain"][key])
                share = per["ratios"].get(key)
                if share is None and mine is not None and theirs:
                    share = round(mine / theirs, 3)
                goal = _goal(key, link)
                text, met = (goal[0], goal[1](per)) if goal else ("", None)
                rows.append(f"| {size} | +{link} ms | {label} | {_num(mine)} | {_num(theirs)} | "
                            f"{_num(share)} | {text} | {_verdict(met)} |")
    return rows


def own(found: dict[str, Any]) -> list[str]:
    rows = ["| measure | value | goal | |", "|---|---|---|---|"]
    link = found["link"]
    rows.append(f"| Redis PING, direct / through the proxy at +0 ms (p50, ms) | "
                f"{link['direct']['p50']:.3g} / {link['0']['p50']:.3g} (proxy's own cost "
                f"{link['proxy_cost_ms']:.3g}) | | |" if "0" in link else "")
    for ms in found["links_ms"]:
        key = f"{ms:g}"
        rows.append(f"| link round trip at +{key} ms (PING p50 / p95, ms) | "
                    f"{link[key]['p50']:.3g} / {link[key]['p95']:.3g} | | |")
    cal = found["calibration"]
    rows.append(f"| `python -c 'import celery'` here / in a Pi cgroup (s) | "
                f"{cal['import_celery_here_s']} / {cal['import_celery_pi_s']} "
                f"({cal['slowdown']}x; quota {found['quota']['quota_us']} us per "
                f"{found['quota']['period_us']} us) | | |")
    sizes = [s for s in found["sizes"] if f"size_{s}" in found]
    for size in sizes:
        at = found[f"size_{size}"]
        rows.append(f"| `fab launch` of {size} (Pi CPU, +2 ms link) | {at['launch_s']:.3g} s | | |")
        ready = at.get("serve_to_ready_s")
        if ready:
            rows.append(f"| worker can serve -> READY, {size} launched (max) | "
                        f"{ready['median']:.3g} s ({ready['max']:.3g}) | <= {READY_S} s | "
                        f"{_verdict(ready['max'] <= READY_S)} |")
    if len(sizes) > 1:
        most, one = found[f"size_{sizes[-1]}"], found[f"size_{sizes[0]}"]
        share = most["launch_s"] / one["launch_s"]
        rows.append(f"| launch {sizes[-1]} / launch {sizes[0]} | {share:.2f} | <= {LAUNCH_RATIO} | "
                    f"{_verdict(share <= LAUNCH_RATIO)} |")
    for size in sizes:
        at = found[f"size_{size}"]
        load = at["broker_while_idle"]
        rows.append(f"| broker (coordinator's Redis) while {size} x 2 workers idle: CPU, RSS, "
                    f"commands/s | {load['redis_cpu_percent']} %, {load['redis_rss_mb']} MB, "
                    f"{load['commands_per_s']} | | |")
        status = at.get("status")
        for where in ("direct", "lan") if status else ():
            got = status[where]
            rows.append(f"| `fab status` of {status['devices']} heartbeats, {where} (p50 / p95, "
                        f"ms; its CPU) | {got['p50_ms']} / {got['p95_ms']} ({got['cpu_ms']} ms) | "
                        f"<= {STATUS_MS:g} ms | {_verdict(got['p50_ms'] <= STATUS_MS)} |")
    return [r for r in rows if r]


def idle(found: dict[str, Any]) -> list[str]:
    at = found["idle"]
    mine, theirs = at["catdog"], at["plain"]
    rows = ["| idle worker, Pi profile, one device | CatDog | plain Celery | ratio | goal | |",
            "|---|---|---|---|---|---|"]
    met = mine["commands_per_s"] <= IDLE_COMMANDS_PER_S
    rows.append(f"| Redis commands / s | {mine['commands_per_s']} | {theirs['commands_per_s']} | "
                f"{_num(at['commands_per_s_ratio'])} | CatDog <= {IDLE_COMMANDS_PER_S:g} | "
                f"{_verdict(met)} |")
    for name in sorted(set(mine["by_command_per_s"]) | set(theirs["by_command_per_s"])):
        rows.append(f"| ... `{name.upper()}` / s | {mine['by_command_per_s'].get(name, 0)} | "
                    f"{theirs['by_command_per_s'].get(name, 0)} | | | |")
    for key, label in (("rss_mb", "RSS (MB)"), ("pss_mb", "PSS (MB)"),
                       ("cgroup_mb", "charged to its cgroup (MB)")):
        rows.append(f"| {label} | {mine[key]} | {theirs[key]} | {_num(at[f'{key}_ratio'])} | "
                    f"ratio <= 1 | {_verdict(mine[key] <= theirs[key])} |")
    return rows


def render(found: dict[str, Any]) -> str:
    head = (f"Field run of {found.get('when', '?')} on {found.get('machine', {}).get('cpu', '?')}, "
            f"{found.get('machine', {}).get('cores', '?')} cores: devices {found['sizes']}, links "
            f"+{', +'.join(f'{ms:g}' for ms in found['links_ms'])} ms, {found['calls']} calls, "
            f"{found['tasks_per_device']} tasks per device, CPU factor {found['factor']:g}.")
    parts = [head, "", *compared(found), "", *idle(found), "", *own(found)]
    return "\n".join(parts)
