"""``tasks.check``: the smoke check a rolling deploy runs on each canary (``fab deploy --canary``).

A worker answers only once it has imported every task module (a module that fails to import
stops it at start), so an answer proves the release starts and serves. The answer says which
release the worker runs and how many tasks it knows, for the rollout's report.
"""

from __future__ import annotations

from typing import Any

from catdog import app
from catdog.fleet import fleet

NAME = "tasks.check"


@app.task(name=NAME)
def check() -> dict[str, Any]:
    """The device, its release, and the tasks its worker registered (built-ins included)."""
    from catdog import release

    return {"device": fleet.device.name, "release": release.running(),
            "tasks": sorted(n for n in app.tasks if not n.startswith("celery."))}
