"""A device allowed to run its worker as root (``allow_root: true``) says so once, in CatDog's
words, instead of Celery's superuser ``SecurityWarning``.

Celery warns on every start of a worker run by root (``celery.platforms.check_privileges``: nine
lines on stderr, raw, ahead of the banner); for a device whose inventory says ``allow_root: true``
that question has been answered. Only that warning is filtered out (Celery's others stay), and the
worker logs one line of its own once logging is set up. A device without ``allow_root`` never gets
this far as root (:func:`workers.cli.check_user` refuses it).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from catdog.inventory import Device

log = logging.getLogger("catdog.worker")

#: the start of Celery's warning (``celery.platforms.ROOT_DISCOURAGED``)
CELERY_ROOT_WARNING = r"You're running the worker with superuser privileges"
ROOT_NOTE = "device %s runs its worker as root (allow_root: true)"


def note_root(device: Device, euid: int) -> bool:
    """For a root worker of an ``allow_root`` device: Celery's warning off, CatDog's line on."""
    if euid != 0 or not device.allow_root:
        return False
    from celery import signals
    from celery.exceptions import SecurityWarning

    warnings.filterwarnings("ignore", message=CELERY_ROOT_WARNING, category=SecurityWarning)

    def say(**_: Any) -> None:
        log.warning(ROOT_NOTE, device.name)

    signals.celeryd_after_setup.connect(say, weak=False)
    return True
