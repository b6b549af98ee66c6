"""``fab logs``: a worker's output, kept on its device by tmux (``pipe-pane``) in
``.catdog/logs/<device>.log``; ``follow`` streams it until Ctrl-C. Shown as plain text (the
worker's colour codes taken out) unless ``color``."""

from __future__ import annotations

import shlex

from catdog.errors import CatDogError
from catdog.inventory import Device, Inventory
from ops.logfile import plain, plain_filter
from ops.session import WorkerSession, worker_session

DEFAULT_LINES = 50


def recent(inventory: Inventory, device: Device, lines: int = DEFAULT_LINES,
           color: bool = False) -> str:
    """The last ``lines`` lines of the device's worker log (with its colour codes if ``color``)."""
    with worker_session(inventory, device) as session:
        text = session.host.shell(f"tail -n {int(lines)} {_existing_log(session)}").stdout
    return text if color else plain(text)


def follow(inventory: Inventory, device: Device, lines: int = DEFAULT_LINES,
           color: bool = False) -> int:
    """Stream the device's worker log (``tail -F``) until Ctrl-C, which ends it normally."""
    with worker_session(inventory, device) as session:
        command = f"tail -n {int(lines)} -F {_existing_log(session)}"
        session.host.stream(command if color else f"{command} | {plain_filter()}")
    return 0


def _existing_log(session: WorkerSession) -> str:
    if clash := session.clash(session.pane()):
        raise CatDogError(clash)
    path = shlex.quote(session.log_path)
    if session.host.shell(f"test -f {path}").status != 0:
        raise CatDogError(f"{session.device.name}: no worker log at {session.log_path}; "
                          f"launch it first (fab launch --devices {session.device.name})")
    return path
