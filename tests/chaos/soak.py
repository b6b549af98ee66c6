"""The chaos soak: a steady stream of tasks on a four-device fleet while a fault strikes every 10 s.

``python -m tests.chaos.soak --minutes 10 --tasks 10000`` (root: it builds network namespaces).
The fleet is :class:`~tests.chaos.soakfleet.SoakFleet`; the faults are drawn from one seed
(:mod:`tests.chaos.schedule`, printed; ``--seed`` reproduces the schedule) and struck by
:mod:`tests.chaos.faults`. Tasks sleep 0.05 s to 5 s (most are short), and go to ``any``, to a
capability or to one device; each carries its number, which the ledger checks. At the end every
fault is healed, the fleet drains (bounded by ``--drain``: a killed worker's tasks come back
about 65 s after it died), and the ledger is printed and appended to ``artifacts/chaos.jsonl``:
sent, completed, duplicates (extra starts), lost (sent, never completed), the longest a task
waited from its send to its first start, the faults struck by kind, the reboots by how the worker
came back (``unit``: ``net-b`` boots under systemd, :mod:`tests.chaos.soakbox`; ``relaunch``),
and what the boots touched outside the box (nothing). ``--json`` prints it as one JSON document
on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from kombu.exceptions import OperationalError

from catdog import app
from catdog.quarantine import QUARANTINE_KEY

from .faults import Faults
from .ledger import Tally
from .schedule import Fault, plan
from .soakfleet import BOOTED, LINKED, SoakFleet

SEND_RETRY_FOR_S = 60.0
#: the drain gives up once nothing completed for this long: 60 s visibility timeout, the 5 s
#: sweep, a 5 s task, and room
STALL_S = 100.0
TARGETS = (("any", 35), ("cap:soak", 20), ("cap:lan", 10), ("cap:gpu", 10), ("device", 25))


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes of faults and tasks")
    parser.add_argument("--tasks", type=int, default=480, help="tasks sent, evenly over them")
    parser.add_argument("--seed", type=int, help="the seed of faults and tasks (default: random)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between faults")
    parser.add_argument("--drain", type=float, default=240.0,
                        help="seconds the healed fleet gets to finish every task")
    parser.add_argument("--folder", type=Path, help="where the fleet lives (default: a new "
                                                     "temporary folder)")
    parser.add_argument("--fsync", choices=("everysec", "always"), default="everysec",
                        help="the broker's appendfsync (the embedded Redis's is everysec)")
    parser.add_argument("--json", action="store_true", help="the ledger as JSON on stdout")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    say(f"seed {seed} (--seed {seed} reproduces the schedule)")
    signal.signal(signal.SIGTERM, _interrupted)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="catdog-soak-"))
    module = f"soak_{uuid.uuid4().hex[:8]}"
    fleet = SoakFleet(folder, module, f"catdog-soak-{uuid.uuid4().hex[:6]}", args.fsync)
    try:
        tally = soak(fleet, args, seed)
    finally:
        fleet.close()
    tally.report(sys.stderr if args.json else None)
    if args.json:
        print(json.dumps(tally.as_dict()))
    if tally.lost == 0 and args.folder is None:
        shutil.rmtree(folder, ignore_errors=True)  # kept when something was lost: the logs
    return 0 if tally.lost == 0 else 1


def soak(fleet: SoakFleet, args: argparse.Namespace, seed: int) -> Tally:
    launched = fleet.launch()
    if set(launched.values()) != {"READY"}:
        raise RuntimeError(f"the fleet did not launch: {launched}")
    enabled = fleet.enable()  # `fab enable` where the device boots: its unit adopts the worker
    if set(enabled.values()) != {"ENABLED"}:
        raise RuntimeError(f"autostart was not enabled: {enabled}")
    duration = args.minutes * 60
    faults_planned = plan(seed, duration, fleet.names, list(LINKED), args.every, BOOTED)
    rng = random.Random(seed + 1)
    started = time.monotonic()
    faults = Faults(fleet, started)
    striker = threading.Thread(target=strike_all, args=(faults, faults_planned, started),
                               daemon=True, name="striker")
    striker.start()
    sent: dict[int, dict[str, Any]] = {}
    retries = 0
    for n in range(args.tasks):
        # half a period off the faults' whole seconds: no send is timed to land with a strike
        time.sleep(max(0.0, started + (n + 0.5) * duration / args.tasks - time.monotonic()))
        target, seconds = draw(rng, fleet.names)
        sent[n] = {"id": str(uuid.uuid4()), "target": target, "seconds": seconds,
                   "at": time.time()}
        retries += send(fleet, n, sent[n])
    striker.join()
    say(f"sent {len(sent)} in {time.monotonic() - started:.0f} s; healing every fault")
    faults.wait(timeout=300)
    heal_started = time.monotonic()
    faults.note_dead(fleet.names, "at the end")
    healed = fleet.launch()  # whatever a fault left down comes back
    drained_after = drain(fleet, sent, args.drain)
    say(f"healed ({healed}) and drained in {time.monotonic() - heal_started:.0f} s")
    return ledger(fleet, sent, seed, args, faults, retries, drained_after)


def strike_all(faults: Faults, planned: list[Fault], started: float) -> None:
    """Strike each fault at its time (each then holds and heals in a thread of its own)."""
    for fault in planned:
        time.sleep(max(0.0, started + fault.at_s - time.monotonic()))
        faults.strike(fault)


def draw(rng: random.Random, devices: list[str]) -> tuple[str, float]:
    """A task's target and length: mostly short, a few up to 5 s."""
    target = rng.choices([k for k, _ in TARGETS], [w for _, w in TARGETS])[0]
    if target == "device":
        target = rng.choice(devices)
    roll = rng.random()
    low, high = (0.05, 0.3) if roll < 0.7 else (0.3, 1.5) if roll < 0.92 else (1.5, 5.0)
    return target, round(rng.uniform(low, high), 3)


def send(fleet: SoakFleet, n: int, task: dict[str, Any]) -> int:
    """Send task ``n``, trying again (same task id) while the broker is down; the retries."""
    task_fn = fleet.probe.soak
    # ``any`` is what a call with no target gets (`.on("any")` is refused: catdog.targets
    # does not parse the word yet)
    call = task_fn if task["target"] == "any" else task_fn.on(task["target"])
    retries = 0
    while True:
        try:
            call.apply_async((n, task["seconds"]), task_id=task["id"])
            return retries
        except (OperationalError, redis.RedisError, OSError) as exc:  # the broker down
            retries += 1
            if time.time() - task["at"] > SEND_RETRY_FOR_S:
                raise RuntimeError(f"task {n} not sent within {SEND_RETRY_FOR_S:.0f} s") from exc
            time.sleep(0.5)


def results(fleet: SoakFleet, sent: dict[int, dict[str, Any]]) -> dict[int, Any]:
    """Every task's result as the backend holds it (its value, or None while not a success)."""
    backend = app.backend
    keys = {n: backend.get_key_for_task(t["id"]) for n, t in sent.items()}
    found: dict[int, Any] = {}
    numbers = list(keys)
    for i in range(0, len(numbers), 500):
        chunk = numbers[i:i + 500]
        for n, raw in zip(chunk, fleet.client.mget([keys[m] for m in chunk]), strict=True):
            meta = backend.decode_result(raw) if raw else None
            found[n] = meta["result"] if meta and meta["status"] == "SUCCESS" else None
    return found


def drain(fleet: SoakFleet, sent: dict[int, dict[str, Any]], bound: float) -> float | None:
    """Seconds until every task completed; None when not within ``bound``, or when nothing more
    completed for :data:`STALL_S` (longer than a dead worker's tasks take to come back)."""
    started = time.monotonic()
    progress, completed = started, -1
    while time.monotonic() - started < bound and time.monotonic() - progress < STALL_S:
        try:
            done = results(fleet, sent)
        except Exception:  # the broker may still be coming back
            done = {}
        now_completed = sum(done.get(n) == n for n in sent)
        if now_completed == len(sent):
            return round(time.monotonic() - started, 1)
        if now_completed > completed:
            progress, completed = time.monotonic(), now_completed
        time.sleep(2)
    return None


def ledger(fleet: SoakFleet, sent: dict[int, dict[str, Any]], seed: int,
           args: argparse.Namespace, faults: Faults, retries: int,
           drained_after: float | None) -> Tally:
    done = results(fleet, sent)
    starts: dict[int, list[float]] = {}
    for raw in fleet.client.lrange(f"{fleet.module}:starts", 0, -1):
        n, at, _device = (raw.decode() if isinstance(raw, bytes) else raw).split()
        starts.setdefault(int(n), []).append(float(at))
    waits = sorted((min(starts[n]) - t["at"], n) for n, t in sent.items() if n in starts)
    completed = sum(done.get(n) == n for n in sent)
    longest, which = waits[-1] if waits else (0.0, -1)
    lost = sorted(n for n in sent if done.get(n) != n)
    notes: dict[str, Any] = {
        "seed": seed, "minutes": args.minutes, "fsync": args.fsync,
        "rate_per_s": round(args.tasks / args.minutes / 60, 1),
        "faults": faults.counts(), "reboots": faults.reboot_forms(),
        "touched_outside_boxes": fleet.outside_touched(), "longest_wait_s": round(longest, 1),
        "longest_wait_target": sent[which]["target"] if which >= 0 else None,
        "wait_p99_s": round(waits[int(0.99 * (len(waits) - 1))][0], 2) if waits else None,
        "send_retries": retries, "drained_after_s": drained_after,
        "faults_failed": [f.as_dict() for f in faults.struck if f.error],
    }
    queued = still_queued(fleet, {sent[n]["id"] for n in lost})
    notes["lost_but_still_queued"] = len(queued)  # not gone: not run within the drain
    notes["workers_found_dead"] = faults.found_dead
    notes["quarantined"] = fleet.client.hlen(QUARANTINE_KEY)  # held after max_deliveries losses
    if lost:
        notes["lost_tasks"] = {n: sent[n] | {"started": len(starts.get(n, [])),
                                             "still_queued": sent[n]["id"] in queued}
                               for n in lost[:5]}
    duplicates = sum(len(v) - 1 for n, v in starts.items() if n in sent and len(v) > 1)
    return Tally("chaos soak", len(sent), completed, duplicates, len(sent) - completed, notes)


def still_queued(fleet: SoakFleet, ids: set[str]) -> set[str]:
    """Those of the task ``ids`` whose message is still on a queue, or held in ``unacked``: not
    gone, only not run (yet)."""
    if not ids:
        return set()
    raws: list[Any] = list(fleet.client.hvals("catdog.unacked"))
    for key in fleet.client.scan_iter("catdog.*", count=1000):
        if fleet.client.type(key) == b"list":
            raws.extend(fleet.client.lrange(key, 0, -1))
    found = set()
    for raw in raws:
        message = json.loads(raw)
        message = message[0] if isinstance(message, list) else message  # unacked: [message, ...]
        task_id = (message.get("headers") or {}).get("id")
        if task_id in ids:
            found.add(task_id)
    return found


def say(line: str) -> None:
    print(f"soak: {line}", file=sys.stderr, flush=True)


def _interrupted(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # the fleet is still taken down (finally)


if __name__ == "__main__":
    sys.exit(main())
