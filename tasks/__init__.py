"""The task package of CatDog's own checkout: ``from tasks import run_on`` works here.

CatDog's built-in and example tasks live in :mod:`catdog.tasks` (installed with CatDog); this
package is what a user's own project has in its place: workers import every module of the project's
``tasks`` package (or ``tasks.py``) beside the inventory. It is not part of the installed wheel, so
a user's own ``tasks`` never collides with CatDog's.
"""

from __future__ import annotations

from catdog.tasks import run_on

__all__ = ["run_on"]
