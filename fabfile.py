"""CatDog's commands for ``fab`` (run ``fab --list``); they are defined in :mod:`ops.fab`.

A project of your own gets the same commands from a fabfile of one line (``catdog init`` writes it).
"""

from ops.fab import *  # noqa: F403
