"""Which release of a project this process runs: the record ``fab deploy`` leaves in each release's
environment (``<workdir>/.catdog/releases/<id>/release.json``, beside its ``pyvenv.cfg``).

A worker started from a release (``<release>/bin/python``) finds it through ``sys.prefix``; one
started from the device's own ``python`` (no release deployed yet, or ``host: local``) runs none
(None). The heartbeat carries it (``fab status`` shows it) and the built-in check task answers it.
Reading is lazy: nothing happens at import.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: in a release's folder, written last by ``fab deploy``: the release is whole once it is there
RECORD = "release.json"


def record(prefix: str | None = None) -> dict[str, Any] | None:
    """The release record of the environment at ``prefix`` (default: this process's), or None."""
    try:
        found = json.loads((Path(prefix or sys.prefix) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def running() -> str | None:
    """The id of the release this process runs, or None (not started from a release)."""
    found = record()
    release = found.get("id") if found else None
    return str(release) if release else None
