"""The Celery app, ``catdog.app``: static settings from :mod:`catdog.settings`, the rest from the fleet.

Creating the app connects to nothing. The broker, the result backend and the router are added as
lazy defaults, evaluated the first time the configuration is read (the first call that needs the
broker); only then is the inventory loaded and, on the coordinator, the embedded Redis started.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery

from catdog import backend, broker, settings
from catdog.errors import CatDogError, InventoryError, exit_status
from catdog.fleet import COORDINATOR, WORKER, fleet
from catdog.routing import ANY_QUEUE, declared_queues

#: A worker keeps a finished task's result until Redis takes it: a device cut off as a task ends
#: stores the result and acknowledges the message once the link is back (retrying every 5 s at
#: most), instead of failing the store and, in a threads pool, never settling the task (Celery
#: drops a request whose tracer raised), which would hold its message and its slot for good.
#: Callers keep Celery's default: a call on a coordinator with no Redis raises.
WORKER_RESULT_RETRY = {"result_backend_always_retry": True,
                       "result_backend_max_sleep_between_retries_ms": 5000}


def fleet_settings() -> dict[str, Any]:
    """Settings that depend on the inventory: where the broker is, how tasks are routed.

    Under Celery's own command line (``celery -A catdog ...``) an error here (no inventory, say)
    becomes Celery's one-line ``Error: ...`` and a non-zero exit, not a traceback."""
    try:
        return _fleet_settings()
    except CatDogError as exc:
        raise for_command_line(exc) from exc


def for_command_line(exc: CatDogError) -> Exception:
    """``exc`` as a :class:`click.ClickException` when a click command is running (Celery's CLI:
    click prints its message on one line and exits with its status), else ``exc`` itself."""
    click = sys.modules.get("click")  # no click loaded: no click command is running
    if click is None or click.get_current_context(silent=True) is None:
        return exc
    message = f"catdog: {exc}"
    if isinstance(exc, InventoryError) and not fleet.path.exists():
        message = (f"catdog: no inventory at {fleet.path}: run the command from your project's "
                   f"folder (where catdog.yaml is), or set CATDOG_INVENTORY=/path/to/catdog.yaml")
    error = click.ClickException(message)
    error.exit_code = exit_status(exc)
    return error


def _fleet_settings() -> dict[str, Any]:
    inventory = fleet.inventory
    url = broker.resolve(inventory, start_embedded=fleet.role == COORDINATOR)
    settings: dict[str, Any] = {
        "broker_url": url,
        "result_backend": url,
        "task_routes": ("catdog.task:route_task",),
        "task_default_queue": ANY_QUEUE,
        "task_queues": declared_queues(inventory),  # every queue `celery purge` empties
    }
    settings.update(broker.tls_settings(url))
    if fleet.role == WORKER:
        settings.update(WORKER_RESULT_RETRY)
        settings["result_backend"] = backend.url_for_workers(url)
    if inventory.timezone:
        settings["timezone"] = inventory.timezone
    return settings


def control_app(url: str) -> Celery:
    """A Celery app that talks to the workers of the fleet at ``url`` (ping, broadcasts):
    CatDog's settings and that broker, nothing taken from the process-global fleet, no tasks.
    A :class:`~catdog.context.FleetContext` opened for an inventory uses one, so two fleets
    operated from one process never reach each other's workers."""
    control = Celery("catdog", set_as_current=False)
    control.config_from_object(settings)
    control.conf.update(broker_url=url, result_backend=url, **broker.tls_settings(url))
    return control


class FleetCelery(Celery):
    """Celery, but a configuration that failed (no inventory yet, say) is tried again next time.

    Plain Celery marks itself configured before evaluating lazy defaults, so one failure would
    leave an app without its broker, silently falling back to localhost.
    """

    def _load_config(self) -> Any:
        pending = list(self._pending_defaults)
        try:
            return super()._load_config()
        except Exception:
            self._pending_defaults.clear()
            self._pending_defaults.extend(pending)
            self.configured = False
            self._conf = None
            raise


def create_app() -> Celery:
    app = FleetCelery("catdog", task_cls="catdog.task:FleetTask", set_as_current=False)
    # the module object, not a name looked up on sys.path: a celeryconfig.py of the user's own
    # in the folder a worker runs in cannot replace CatDog's settings
    app.config_from_object(settings)
    app.add_defaults(fleet_settings)
    return app


app = create_app()
