"""``fab logs``: a worker's output, kept on its device by tmux (``pipe-pane``) in
``.catdog/logs/<device>.log``; ``follow`` streams it until Ctrl-C."""

from __future__ import annotations

import shlex

from catdog.errors import CatDogError
from catdog.inventory import Device, Inventory
from ops.session import WorkerSession, worker_session

DEFAULT_LINES = 50


def recent(inventory: Inventory, device: Device, lines: int = DEFAULT_LINES) -> str:
    """The last ``lines`` lines of the device's worker log."""
    with worker_session(inventory, device) as session:
        return session.host.shell(f"tail -n {int(lines)} {_existing_log(session)}").stdout


def follow(inventory: Inventory, device: Device, lines: int = DEFAULT_LINES) -> int:
    """Stream the device's worker log (``tail -F``) until Ctrl-C, which ends it normally."""
    with worker_session(inventory, device) as session:
        session.host.stream(f"tail -n {int(lines)} -F {_existing_log(session)}")
    return 0


def _existing_log(session: WorkerSession) -> str:
    if clash := session.clash(session.pane()):
        raise CatDogError(clash)
    path = shlex.quote(session.log_path)
    if session.host.shell(f"test -f {path}").status != 0:
        raise CatDogError(f"{session.device.name}: no worker log at {session.log_path}; "
                          f"launch it first (fab launch --devices {session.device.name})")
    return path
