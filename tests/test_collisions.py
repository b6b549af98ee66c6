"""A project's own ``tasks.py``, ``tasks/`` or ``celeryconfig.py`` beside the inventory (where
Celery's tutorials put them) neither breaks a worker nor replaces CatDog's settings.

Each test launches a real worker in a project folder holding the colliding file, runs CatDog's
built-in ``run_on`` and the project's own task on it, and reads the settings the worker runs with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from catdog import app, settings
from ops.results import READY
from tasks import run_on  # CatDog's own checkout keeps this import working

from .conftest import device_spec

pytestmark = pytest.mark.slow

#: a task of the project's that reports the settings its worker runs with
SETTINGS_PROBE = '''
from catdog import app

@app.task
def worker_settings():
    keys = ("task_serializer", "accept_content", "broker_transport_options",
            "worker_prefetch_multiplier", "task_acks_late", "result_expires")
    return {k: app.conf[k] for k in keys}

@app.task
def mine(x):
    return ["mine", x]
'''

#: what a user's celeryconfig.py might say (Celery's tutorial has one like it)
USERS_CELERYCONFIG = '''
broker_url = "redis://127.0.0.1:1/9"
task_serializer = "pickle"
accept_content = ["pickle", "json"]
broker_transport_options = {"visibility_timeout": 3600}
worker_prefetch_multiplier = 8
task_acks_late = False
result_expires = 60
'''


def catdog_settings() -> dict[str, Any]:
    return {"task_serializer": settings.task_serializer,
            "accept_content": settings.accept_content,
            "broker_transport_options": settings.broker_transport_options,
            "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
            "task_acks_late": settings.task_acks_late,
            "result_expires": settings.result_expires}


def launch_project(make_fleet, files: dict[str, str], **top: Any):
    fleet = make_fleet({"pc": device_spec([], pool="threads", concurrency=2)}, **top)
    for name, text in files.items():
        path = fleet.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    results = fleet.launch()
    assert [r.state for r in results] == [READY], [r.as_dict() for r in results]
    return fleet


def call(name: str, *args: Any) -> Any:
    """The project's own task, by its registered name (this process has CatDog's ``tasks``)."""
    return app.send_task(name, args=args).get(timeout=30)


def assert_builtin_runs() -> None:
    done = run_on.delay("pc", "echo built-in").get(timeout=30)
    assert (done["exit_code"], done["stdout"].strip()) == (0, "built-in")


def test_a_projects_own_tasks_py_is_imported_beside_catdogs_tasks(make_fleet) -> None:
    launch_project(make_fleet, {"tasks.py": SETTINGS_PROBE})
    assert_builtin_runs()
    assert call("tasks.mine", 1) == ["mine", 1]
    assert call("tasks.worker_settings") == catdog_settings()


def test_a_projects_own_tasks_package_is_imported_module_by_module(make_fleet) -> None:
    launch_project(make_fleet, {"tasks/__init__.py": '"""The project\'s tasks."""\n',
                                "tasks/mine.py": SETTINGS_PROBE})
    assert_builtin_runs()
    assert call("tasks.mine.mine", 2) == ["mine", 2]
    assert call("tasks.mine.worker_settings") == catdog_settings()


def test_a_celeryconfig_py_in_the_workers_folder_does_not_replace_catdogs_settings(
        make_fleet) -> None:
    fleet = launch_project(make_fleet, {"celeryconfig.py": USERS_CELERYCONFIG,
                                        "probe_settings.py": SETTINGS_PROBE},
                           imports=["probe_settings"])
    assert Path(fleet.inventory.root, "celeryconfig.py").is_file()  # the worker's folder
    assert_builtin_runs()
    assert call("probe_settings.mine", 3) == ["mine", 3]
    assert call("probe_settings.worker_settings") == catdog_settings()


def test_a_task_module_that_fails_to_import_fails_the_launch_with_one_line(make_fleet) -> None:
    fleet = make_fleet({"pc": device_spec([])})
    (fleet.folder / "tasks.py").write_text("import RPi.GPIO  # only on the Pi\n")
    [result] = fleet.launch()
    assert result.state == "FAILED"
    assert (f"catdog worker: task module 'tasks' (a task module of {fleet.folder}) failed to "
            f"import at {fleet.folder / 'tasks.py'}:1: ModuleNotFoundError: No module named 'RPi'"
            in result.reason), result.as_dict()
