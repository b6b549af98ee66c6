"""Celery settings shared by the coordinator and every worker (static; no I/O here).

The app loads this module object itself (``config_from_object(settings)``), so no
``celeryconfig`` found on ``sys.path`` can stand in for it.

The broker, the result backend and routing come from the inventory (see catdog/application.py).
"""

# Messages are JSON only: a pickled message is refused, never executed.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# At least once: a message is acknowledged after its task ran, and re-queued when the worker
# running it is lost (killed, power cut).
task_acks_late = True
task_reject_on_worker_lost = True

# An idle device pulls work first: each worker process reserves one message at a time.
worker_prefetch_multiplier = 1

# Redis re-delivers a message that was taken but not acknowledged once it has gone
# `visibility_timeout` seconds without its worker renewing it. A live worker renews what it holds
# with every heartbeat (workers/leases.py), so a task may run as long as it needs; a message whose
# worker died (SIGKILL, power cut) goes back on its queue 60 s after the worker's last heartbeat,
# found by the sweep every worker makes every 15 s (`unacked_restore_interval` x
# `unacked_restore_throttle`: a sweep is six or seven Redis commands, so every 5 s it was over a
# command a second of an idle device's broker traffic; any one worker's sweep serves the whole
# fleet, so with several devices one comes sooner). A worker cut off
# from Redis for longer than 60 s may see its running task delivered again elsewhere: at least once.
#
# Priorities: 0 runs first, 9 last; a task sent without one gets 5. On Redis each queue is one
# list per priority level, and a worker pops the lists of all its queues in priority order, so a
# priority-0 task on a capability queue goes before a priority-5 task on the device's own queue.
#
# CatDog's keys are its own, so a plain Celery app can use the same Redis database (users often
# have one there): kombu's unacknowledged-message records (a CatDog worker's sweep would restore
# a plain app's message held for a minute, and it would run twice), its control and event
# exchanges (each app's broadcasts reach only its own workers, and each binding table is written
# with one separator: plain Celery reads a table with kombu's own, and failed on ours with
# "ValueError: not enough values to unpack"), and its queues (all named ``catdog.*``).
#
# A link cut while a worker waits for work: Redis may hand it a message just after the cut and
# send it into the dead link, where TCP retransmits it, with backoff, until the link is back (at
# 25 s for a 20 s cut, 51 s for 40 s, 102 s for 100 s). The message is held from the start (the
# take writes its `unacked` record, catdog/transport.py), but kombu drops a fetch connection whose
# reply is overdue by `health_check_interval` (25 s by default), and the message would then wait
# out the visibility timeout. 120 s lets a cut of up to about 100 s deliver it at once; a consumer
# stuck on a half-open connection recovers within about 4 min.
# The broker is Redis through CatDog's transport (catdog/transport.py): a worker takes a message
# and records it as held in one step, so a message Redis hands over is never nowhere.
broker_transport = "catdog.transport:Transport"
broker_transport_options = {"visibility_timeout": 60, "unacked_restore_interval": 5,
                            "health_check_interval": 120,
                            "unacked_restore_throttle": 3, "priority_steps": list(range(10)),
                            "sep": ":", "queue_order_strategy": "priority",
                            "unacked_key": "catdog.unacked",
                            "unacked_index_key": "catdog.unacked_index",
                            "unacked_mutex_key": "catdog.unacked_mutex"}
task_default_priority = 5
#: broadcasts (ping, inspect, shutdown, the kill switch) go to ``catdog.pidbox``, replies to
#: ``reply.catdog.pidbox``, task events to ``catdog.ev``: Celery's are ``celery.*``/``celeryev``
control_exchange = "catdog"
event_exchange = "catdog.ev"

# Results stay in Redis for a day, then expire.
result_expires = 24 * 3600

# No STARTED state (Celery's default): it costs a write and a publish per task. A result is
# PENDING until it is done; `fab status` shows what each device is running from its heartbeat.
task_track_started = False

# Keep trying to reach the broker at start-up (a device may boot before the coordinator).
broker_connection_retry_on_startup = True
broker_connection_retry = True
# Running tasks finish when the broker connection drops; acks_late makes that safe.
worker_cancel_long_running_tasks_on_connection_loss = False

# No task events unless someone watches (Celery's default): `fab flower` switches them on in every
# worker (Flower sends Celery's enable_events), three publishes per task from then on.
worker_send_task_events = False
task_send_sent_event = False
