"""Which inventory a tmux session belongs to: fleets on one machine never act on each other's.

Two inventories with the same ``tmux_socket`` (the default is the same for all) and a device of
the same name would both name its session ``catdog-<device>``. So every session CatDog starts
records its inventory, as ``<coordinator host>:<inventory path>`` in the session option
:data:`ops.tmux.OWNER_OPTION`, and a command that finds a session of another inventory refuses
at once, naming it and the fix (:func:`clash`).

A session started by an older CatDog has no record: its pane's start command says which
inventory started it (``--inventory PATH``; workers and services alike) when the session is on
this machine; it is this inventory's when that is this inventory, or when nothing says otherwise
(an older CatDog's session on an SSH device names only the device's copy of the inventory).
"""

from __future__ import annotations

import os
import shlex
import socket

from catdog.inventory import Inventory
from ops.tmux import Pane, Tmux


def record(inventory: Inventory) -> str:
    """What a session started for ``inventory`` from this machine records as its owner."""
    return f"{socket.gethostname()}:{inventory.path.resolve()}"


def legacy_owner(start_command: str) -> str | None:
    """The ``--inventory`` path of a pane's start command (tmux shows it in double quotes)."""
    text = start_command.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    for i, word in enumerate(words):
        if word == "--inventory" and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--inventory="):
            return word.partition("=")[2]
    return None


def owner_of(tmux: Tmux, name: str, pane: Pane, local: bool) -> str:
    """The session's owner record; for an older CatDog's session on this machine, the one its
    start command implies ("" when nothing says)."""
    if pane.owner or not local:
        return pane.owner
    path = legacy_owner(tmux.start_command(name))
    return f"{socket.gethostname()}:{os.path.realpath(path)}" if path else ""


def clash(inventory: Inventory, tmux: Tmux, name: str, pane: Pane, local: bool = True
          ) -> str | None:
    """Why ``inventory`` must not touch session ``name`` (another inventory's); None if ours."""
    owner = owner_of(tmux, name, pane, local)
    if not owner or owner == record(inventory):
        return None
    host, _, path = owner.partition(":")
    here = host == socket.gethostname()
    where = path if here else f"{path} on {host}"
    older = "" if pane.owner else " (started by an older CatDog)"
    stop = f"fab stop --inventory {shlex.quote(path)}" + ("" if here else f" on {host}")
    return (f"tmux session {name} on socket {tmux.socket} belongs to {where}{older}; stop it "
            f"there ({stop}) or give this inventory its own `tmux_socket:`")
