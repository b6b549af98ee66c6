"""The deferral mover's script on the session's real Redis: what it moves, what it reports, and
what it costs the broker when nothing is due (counted from Redis's own ``INFO commandstats``)."""

from __future__ import annotations

import time

import redis

from catdog.deferral import DEFERRED_KEY, Deferrals


def _calls(client: redis.Redis) -> dict[str, int]:
    return {k: int(v["calls"]) for k, v in client.info("commandstats").items()}


def test_mover_moves_what_is_due_and_looks_first_cheaply(redis_client: redis.Redis) -> None:
    client = redis_client
    client.delete(DEFERRED_KEY, "catdog.mv-test")
    moves = Deferrals(client)
    assert moves.move_due() == (0, None)  # nothing deferred
    before = _calls(client)
    assert moves.move_due() == (0, None)
    after = _calls(client)
    spent = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    spent["cmdstat_info"] = spent.get("cmdstat_info", 1) - 1
    assert {k: v for k, v in spent.items() if v} == {"cmdstat_evalsha": 1, "cmdstat_zrange": 1}
    later = time.time() + 3600
    moves.add("catdog.mv-test", "later", later)
    moved, due = moves.move_due()
    assert moved == 0 and due is not None and abs(due - later) < 1e-3
    moves.add("catdog.mv-test", "now", time.time() - 1)
    moved, due = moves.move_due()
    assert moved == 1 and due is not None and abs(due - later) < 1e-3
    assert client.lrange("catdog.mv-test", 0, -1) == [b"now"] and moves.waiting() == 1
    client.delete(DEFERRED_KEY, "catdog.mv-test")
