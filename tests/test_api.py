"""The fleet operations from Python (ops.api): per-device results like Fabric's GroupResult, and
event callbacks, on real workers."""

from __future__ import annotations

import pytest

from ops import api
from ops.results import FAILED, READY, STOPPED

from .conftest import device_spec

pytestmark = pytest.mark.slow


def test_launch_and_stop_from_python_with_events(make_fleet) -> None:
    fleet = make_fleet({"good": device_spec(["camera"]),
                        "bad": device_spec([], python="/opt/none/bin/python")})
    events: list[tuple[str, str]] = []
    found = api.launch(str(fleet.path), on_event=lambda d, e, _: events.append((d, e)))
    assert list(found) == ["good", "bad"]
    assert (found["good"].state, found["bad"].state) == (READY, FAILED)
    assert not found.ok and list(found.failed) == ["bad"] and list(found.succeeded) == ["good"]
    assert "python /opt/none/bin/python not found" in found.failed["bad"].reason
    assert [e for d, e in events if d == "good"] == ["starting", "ready"]
    assert [e for d, e in events if d == "bad"] == ["failed"]

    stopped = api.stop(str(fleet.path), ["good"], force=True)
    assert stopped.ok and stopped["good"].state == STOPPED
    assert fleet.sessions() == []
