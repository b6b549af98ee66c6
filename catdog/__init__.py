"""CatDog: run Python tasks on a fleet of small devices, on Celery and Redis.

>>> from catdog import app, NoRoute, CatDogError
>>> issubclass(NoRoute, CatDogError)
True
"""

from __future__ import annotations

from catdog.application import app
from catdog.errors import (
    BrokerError,
    CatDogError,
    CommandError,
    InventoryError,
    NoDeviceNow,
    NoRoute,
    Problem,
    TargetError,
    TooLarge,
    UsageError,
    WorkerRefused,
)
from catdog.fleet import use_inventory
from catdog.targets import Target

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "CatDogError",
    "CommandError",
    "InventoryError",
    "NoDeviceNow",
    "NoRoute",
    "Problem",
    "Target",
    "TargetError",
    "TooLarge",
    "UsageError",
    "WorkerRefused",
    "__version__",
    "app",
    "use_inventory",
]
