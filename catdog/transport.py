"""CatDog's Redis transport: a message is taken and recorded as held in one step on Redis.

kombu's Redis transport takes a message with ``BRPOP`` and only then, in a second round trip,
records it as held (``unacked`` and its index), so that it comes back if its worker dies. A
message Redis handed over in between is nowhere: the reply lost in a cut link when Redis is
killed, a worker killed or powered off just after the pop. The chaos soak lost tasks so.

Here the take is one Lua script (:data:`catdog.redis_scripts.TAKE`): it pops the first message
of the worker's queues (in the order BRPOP would try them) and writes its ``unacked`` record in
the same step, exactly as kombu's QoS writes it, so kombu's restore, CatDog's leases
(workers/leases.py) and acknowledgements work on it unchanged; a message whose reply never
reaches its worker comes back after the visibility timeout, like a dead worker's. The same
script carries what the worker owes Redis since its last take (:mod:`catdog.carry`: the last
task's result, then its acknowledgement) and writes the first delivery's record of the
quarantine count, so a busy solo worker makes one round trip per task.

A script cannot block. A take that finds nothing puts its worker in its queues' waiting sets,
and the worker waits in ``BLPOP`` (at most :data:`BELL_WAIT_S`) on its own inbox and on its
queues' bells. A publish through this transport (:data:`catdog.redis_scripts.PUT`) hands the
message to the worker that has waited longest, held for it, in its inbox: the wait's reply is
the message. With nobody waiting the message goes on its queue's list with a bell, a token
that wakes a waiting worker to take; messages put back (restores, deferrals come due,
hand-ons) ring bells too. A stale token costs one empty take; a message pushed by a producer
that is not CatDog is found by the next take, at most :data:`BELL_WAIT_S` later. A take Redis
refuses (out of memory, say) is logged and tried again after the next wait.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from time import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base
from kombu.utils.json import loads
from redis.exceptions import NoScriptError

from catdog import carry
from catdog.redis_scripts import (
    INBOX_PREFIX,
    PUT,
    PUT_SHA,
    STORE,
    TAKE,
    TAKE_SHA,
    UNWAIT,
    WAKE,
    bell,
    handed_entry,
    ring,
    waiting,
)

log = logging.getLogger(__name__)

#: an idle worker takes again at least this often: one empty take and one BLPOP per period
#: (4 Redis commands in 10 s, of an idle device's 3 a second at most)
BELL_WAIT_S = 10
#: a waiting worker stays in its queues' waiting sets this much longer than its wait, for the
#: wait's reply and the next take to cross the link
WAIT_MARGIN_S = 2
#: an inbox nobody reads (its worker lost) goes after this long; what it held is swept back
#: with the worker's other held messages
INBOX_TTL_S = 600
#: a consumer without acknowledgements (replies) fetches with kombu's BRPOP and its 1 s timeout
REPLY_WAIT_S = 1
#: how long a publisher keeps a direct exchange's queues for a routing key (CatDog's queues are
#: each bound once, to their own exchange, for good)
ROUTE_TTL_S = 30.0

class QoS(kombu_redis.QoS):
    """kombu's QoS, except that a message the take script recorded is not recorded again."""

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.channel._recorded:
            self.channel._recorded.discard(delivery_tag)
            base.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        """Acknowledged here at once; on Redis with the channel's next take, when the ack comes
        from the event loop (whose next tick sends that take, or else sends the ack alone)."""
        if not self.channel.connection.defers_acks or (
                threading.get_ident() != self.channel._loop_thread):
            super().ack(delivery_tag)
            return
        base.QoS.ack(self, delivery_tag)
        self.channel._acks.append(delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._recorded: set[str] = set()
        #: the command in flight on the fetch connection: "take", "wait", "classic" or None
        self._sent: str | None = None
        self._idle = False  # the last take found nothing (or failed): wait on the bells next
        self._unheld: set[str] = set()  # queues consumed without acknowledgements
        self._acks: list[str] = []  # acknowledged here, not yet on Redis
        self._acks_sent: list[str] = []  # on their way with the take in flight
        self._results_sent: list[carry.Result] = []  # likewise
        self._loop_thread: int | None = None
        self._routes: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}
        #: where publishers hand this channel's consumer a message while it waits for work
        self._inbox = f"{INBOX_PREFIX}{uuid.uuid4().hex}"
        #: the queues whose waiting sets this channel is in (its last take found nothing)
        self._waits_for: tuple[str, ...] | None = None
        self._waits_asked: tuple[str, ...] = ()
        self._cached = False  # Redis has the take script (its takes send only its SHA1)
        super().__init__(*args, **kwargs)
        self._acks.extend(carry.owed.take(self.unacked_key, self.unacked_index_key))

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._unheld.add(queue)
        else:
            self._unheld.discard(queue)
        consumed = super().basic_consume(queue, no_ack, *args, **kwargs)
        if self._sent == "wait":  # its wait names the queues it had: end it, take with this one
            with contextlib.suppress(*self.connection_errors), self.conn_or_acquire() as client:
                client.lpush(self._inbox, WAKE)
                client.expire(self._inbox, INBOX_TTL_S)
        return consumed

    # -- taking ------------------------------------------------------------------------------
    def _brpop_start(self, timeout: int | None = None) -> None:
        self._loop_thread = threading.get_ident()
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if all(queue in self._unheld for queue in queues):
            # replies (a ping's): nothing to hold, and a consumer that stops draining (a pooled
            # channel between two broadcasts) must not sit long on a bell or a BRPOP, taking
            # the wake-up or the reply of the one that drains now: kombu's own fetch, with
            # kombu's own timeout
            self._sent = "classic"
            super()._brpop_start(REPLY_WAIT_S)
            return
        connection = self.client.connection
        held = [queue for queue in queues if queue not in self._unheld]
        if self._idle:
            keys = [self._inbox, *(bell(queue) for queue in queues)]
            command: tuple[Any, ...] = ("BLPOP", *keys, timeout or self.brpop_timeout)
            self._sent = "wait"
        else:
            lists = [(self._q_for_pri(queue, pri), queue not in self._unheld)
                     for pri in self.priority_steps for queue in queues]
            self._acks_sent, self._acks = self._acks, []
            self._results_sent = carry.results.take()
            starts = carry.starts
            script = ("EVALSHA", TAKE_SHA) if self._cached else ("EVAL", TAKE)
            command = (*script, 2 + len(lists), self.unacked_key, self.unacked_index_key,
                       *(key for key, _ in lists), repr(time()), len(self._results_sent),
                       len(self._acks_sent), starts.prefix, starts.head, starts.ttl_s,
                       self._inbox, int(((timeout or self.brpop_timeout) + WAIT_MARGIN_S) * 1000),
                       "1" if self._waits_for == tuple(held) else "0", len(held),
                       *(waiting(queue) for queue in held),
                       *_flat(self._results_sent), *self._acks_sent,
                       *("1" if is_held else "0" for _, is_held in lists))
            self._sent = "take"
            self._waits_for, self._waits_asked = None, tuple(held)
        self._in_poll = connection
        self._brpop_sent_at = kombu_redis.monotonic()  # type: ignore[assignment]
        connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        sent, self._sent = self._sent, None
        if sent == "classic":
            return bool(super()._brpop_read(**options))
        try:
            connection = self.client.connection
            try:
                reply = self.client.parse_response(connection, "EVAL" if sent == "take"
                                                   else "BLPOP", **options)
            except self.connection_errors:
                self._unsent()  # owed still
                connection.disconnect()
                raise
            except self.ResponseError as exc:
                if sent == "take" and str(exc).startswith("NOSCRIPT"):  # a new Redis: send it
                    self._cached = False
                    self._unsent()
                    raise kombu_redis.Empty() from exc
                log.error("Redis refused this worker's %s: %s", sent, exc)
                self._unsent()  # sent again, alone
                self._idle = True
                raise kombu_redis.Empty() from exc
            self._acks_sent, self._results_sent = [], []
            self._cached = self._cached or sent == "take"
            if sent == "wait":
                self._idle = False
                if reply and kombu_redis.bytes_to_str(reply[0]) == self._inbox:
                    if kombu_redis.bytes_to_str(reply[1]) == WAKE:
                        raise kombu_redis.Empty()  # take now (with the queues it has now)
                    self._waits_for = None  # its publisher took it out of the waiting sets
                    return self._hand_to_consumer(*handed_entry(reply[1]))  # handed over: held already
                raise kombu_redis.Empty()
            if not reply:
                self._idle, self._waits_for = True, self._waits_asked  # it waits on these
                raise kombu_redis.Empty()
            return self._hand_to_consumer(*reply)
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    def _hand_to_consumer(self, key: Any, item: Any, recorded: Any, started: Any) -> bool:
        """Deliver a message from the list ``key``, recorded as held (``recorded``) and with
        its first delivery's record written (``started``); one for a queue this channel no
        longer consumes (it was handed over as the consumer was cancelled) goes back."""
        dest = kombu_redis.bytes_to_str(key).rsplit(self.sep, 1)[0]
        payload = loads(kombu_redis.bytes_to_str(item))
        tag = payload["properties"]["delivery_tag"]
        if started:
            carry.starts.add(tag)
        if dest not in self._active_queues:
            self._put_back([(tag, bool(started))])
            raise kombu_redis.Empty()
        if recorded:
            self._recorded.add(tag)
        self._queue_cycle.rotate(dest)
        self.connection._deliver(payload, dest)
        return True

    def _put_back(self, handed: list[tuple[str, bool]]) -> None:
        """Put messages handed to this channel back on their queues, unstarted."""
        for tag, started in handed:
            key = carry.starts.forget(tag) if started else None
            with self.conn_or_acquire() as client:
                if key is not None:
                    client.delete(key)
                self.qos.restore_by_tag(tag, client, leftmost=True)

    def basic_cancel(self, consumer_tag: str) -> Any:
        """Stop consuming, and leave the waiting sets at once (the next take joins those of
        the queues still consumed)."""
        queue = self._tag_to_queue.get(consumer_tag)
        self._waits_for = None
        if queue is not None:
            with contextlib.suppress(*self.connection_errors), self.conn_or_acquire() as client:
                client.zrem(waiting(queue), self._inbox)
        return super().basic_cancel(consumer_tag)

    def _unsent(self) -> None:
        """The take in flight failed: its acknowledgements and results wait for the next."""
        self._acks[:0], self._acks_sent = self._acks_sent, []
        carry.results.give_back(self._results_sent)
        self._results_sent = []

    def flush_carried(self) -> None:
        """Send the results and acknowledgements no take carried (this tick sends none) in one
        pipeline, results first; what Redis cannot take now waits for this process's next take
        or channel."""
        acks, self._acks = self._acks, []
        results = carry.results.take()
        if not (acks or results):
            return
        try:
            with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
                if results:
                    pipe.eval(STORE, 0, len(results), *_flat(results))
                for tag in acks:
                    self.qos._remove_from_indices(tag, pipe)
                pipe.execute()
        except self.connection_errors as exc:
            carry.results.give_back(results)
            carry.owed.add(self.unacked_key, self.unacked_index_key, acks)
            log.warning("%d acknowledgement(s) and %d result(s) did not reach Redis (%s): sent "
                        "by the next connection", len(acks), len(results), exc)

    def close(self) -> None:
        if not self.closed:
            self._unsent()
            self.flush_carried()
            self._unwait()
        super().close()

    def _unwait(self) -> None:
        """Leave the waiting sets; put back what was handed to this channel meanwhile."""
        try:
            with self.conn_or_acquire() as client:
                handed = [handed_entry(item) for item in client.eval(UNWAIT, 0, self._inbox)
                          if kombu_redis.bytes_to_str(item) != WAKE]
            self._put_back([(loads(kombu_redis.bytes_to_str(item))["properties"]
                             ["delivery_tag"], bool(started)) for _, item, _, started in handed])
        except self.connection_errors as exc:  # swept back with this worker's other holds
            log.warning("could not leave the waiting sets (%s)", exc)

    # -- putting -----------------------------------------------------------------------------
    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> Any:
        """kombu's lookup, except that a direct exchange's queues for a routing key, once read
        from its binding table, are kept for :data:`ROUTE_TTL_S`: a publish is one round trip
        (its ``LPUSH``), not two (``SMEMBERS`` first). A routing key the table did not match
        is read again every time (a reply queue bound since, say)."""
        if not exchange or self.typeof(exchange).type != "direct":
            return super()._lookup(exchange, routing_key, default)
        now = kombu_redis.monotonic()
        hit = self._routes.get((exchange, routing_key))
        if hit is not None and hit[0] > now:
            return list(hit[1])
        try:
            found = self.typeof(exchange).lookup(self.get_table(exchange), exchange, routing_key,
                                                 default)
        except KeyError:
            found = None
        if not found:
            return super()._lookup(exchange, routing_key, default)
        self._routes[(exchange, routing_key)] = (now + ROUTE_TTL_S, tuple(found))
        return list(found)

    def _queue_bind(self, *args: Any, **kwargs: Any) -> Any:
        self._routes.clear()
        return super()._queue_bind(*args, **kwargs)

    def _delete(self, *args: Any, **kwargs: Any) -> Any:
        self._routes.clear()
        return super()._delete(*args, **kwargs)

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """Hand the message to the worker that has waited longest on ``queue``, else queue it
        with a bell (:data:`catdog.redis_scripts.PUT`): one round trip either way."""
        pri = self._get_message_priority(message, reverse=False)
        props = message["properties"]
        info = props.get("delivery_info") or {}
        args = (PUT, 3, self._q_for_pri(queue, pri), waiting(queue), bell(queue),
                kombu_redis.dumps(message), props["delivery_tag"],
                kombu_redis.dumps(info.get("exchange")), kombu_redis.dumps(info.get("routing_key")),
                INBOX_TTL_S)
        batch = kwargs.get("_publish_batch")
        if batch is not None:
            batch.add("eval", *args)
            return
        with self.conn_or_acquire() as client:
            try:
                client.evalsha(PUT_SHA, *args[1:])
            except NoScriptError:  # a Redis that has not seen it yet
                client.eval(*args)
            if self._expires and queue in self._expires:
                with client.pipeline(transaction=False) as pipe:
                    for step in self.priority_steps:
                        pipe.pexpire(self._q_for_pri(queue, step), self._expires[queue])
                    pipe.execute()

    def _do_restore_message(self, payload: Any, exchange: str, routing_key: str, pipe: Any,
                            leftmost: bool = False) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        try:
            queues = self._lookup(exchange, routing_key)
        except Exception:  # kombu's restore above logged it
            return
        for queue in queues:
            ring(pipe, queue)


def _flat(results: list[carry.Result]) -> list[Any]:
    return [x for r in results for x in (r.key, r.value, r.ttl_s)]


class Poller(kombu_redis.MultiChannelPoller):
    """kombu's poller; after each tick's takes went out, the acknowledgements none carried."""

    def on_poll_start(self) -> None:
        super().on_poll_start()
        for channel in list(self._channels):
            if getattr(channel, "_acks", None) or (carry.results and hasattr(channel, "_acks")):
                channel.flush_carried()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport (``redis://`` and ``rediss://``) with CatDog's take."""

    Channel = Channel
    brpop_timeout = BELL_WAIT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()  # type: ignore[assignment]
        #: acknowledgements ride on takes only under an event loop (a worker's), whose every
        #: tick sends what no take carried; a plain ``drain_events`` consumer acks at once
        self.defers_acks = False

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self.defers_acks = True
        carry.results.attach()
        super().register_with_event_loop(connection, loop)
