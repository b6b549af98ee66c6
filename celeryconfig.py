"""CatDog's static Celery settings are :mod:`catdog.settings`; this name is kept for readers.

CatDog loads its settings from that module object, never by the name ``celeryconfig`` on
``sys.path``, so a user's own ``celeryconfig.py`` in the folder a worker runs in cannot replace them.
"""

from catdog.settings import *  # noqa: F403
