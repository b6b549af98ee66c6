"""CatDog's one exception tree.

Every error CatDog raises on purpose derives from :class:`CatDogError` and carries its process
exit status (``exit_status``: 1 unless the class says otherwise; :func:`exit_status` reads it).
Commands map errors to exit statuses once, at their edge (:func:`catdog.edge.run`); library code
never calls ``sys.exit``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class CatDogError(Exception):
    """Base of every error CatDog raises on purpose."""

    exit_status = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an inventory file, located by file, line and field.

    >>> str(Problem("catdog.yaml", 14, "devices.zero-1.capabilities",
    ...             "expected a list of names, got 'gpio'"))
    "catdog.yaml:14 devices.zero-1.capabilities: expected a list of names, got 'gpio'"
    >>> str(Problem("catdog.yaml", None, "", "the file is empty"))
    'catdog.yaml: the file is empty'
    """

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        field = f" {self.field}:" if self.field else ":"
        return f"{where}{field} {self.message}"


class InventoryError(CatDogError):
    """The inventory is invalid; carries every problem found, not just the first."""

    exit_status = 2

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class NoRoute(CatDogError):
    """No device in the inventory can ever satisfy a target or a task's requirements."""

    def __init__(self, what: str, devices: Iterable[str] = (), capabilities: Iterable[str] = ()):
        self.what = what
        self.devices = tuple(sorted(devices))
        self.capabilities = tuple(sorted(capabilities))
        super().__init__(
            f"{what}; devices: {', '.join(self.devices) or '(none)'}; "
            f"capabilities: {', '.join(self.capabilities) or '(none)'}"
        )


class NoDeviceNow(CatDogError):
    """A target's predicates could be satisfied, but no live device satisfies them now (and the
    call did not wait, or waited its ``timeout=`` out); ``failures``: each device and why."""

    def __init__(self, target: str, failures: dict[str, str]) -> None:
        self.target = target
        self.failures = dict(failures)
        detail = "; ".join(f"{d}: {why}" for d, why in sorted(self.failures.items()))
        super().__init__(f"no live device satisfies {target!r} now ({detail or 'no devices'}); "
                         f"call with timeout=SECONDS to wait for one")


class TargetError(CatDogError, ValueError):
    """A target string is malformed (not a device name, ``cap:X``, ``all:X`` or ``all``)."""

    exit_status = 2


class UsageError(CatDogError):
    """A command was asked for something that does not exist (an unknown device, say)."""

    exit_status = 2


class BrokerError(CatDogError):
    """The broker cannot be reached, started or configured."""


class BrokerUnreachable(BrokerError):
    """The broker did not answer (connection refused, timed out, password refused).

    >>> str(BrokerUnreachable("redis://:***@10.0.0.2:6379/0", "timed out", "check it runs"))
    'broker redis://:***@10.0.0.2:6379/0 does not answer (timed out): check it runs'
    """

    def __init__(self, url: str, why: str, check: str) -> None:
        self.url, self.why, self.check = url, why, check
        super().__init__(f"broker {url} does not answer ({why}): {check}")


class EmbeddedRedisError(BrokerError):
    """The embedded redis-server failed to start or stop; carries its log tail."""


class CommandError(CatDogError):
    """An external command (tmux, ssh, a shell) failed; carries its evidence."""

    def __init__(self, argv: Sequence[str], status: int, output: str = "") -> None:
        self.argv = tuple(argv)
        self.status = status
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-10:])
        super().__init__(
            f"command {' '.join(self.argv)!r} exited {status}" + (f":\n{tail}" if tail else "")
        )


class TooLarge(CatDogError, ValueError):
    """A task's arguments or result exceed the size limit (see :mod:`catdog.task`)."""


class BuildError(CatDogError):
    """The coordinator could not build what ``fab deploy`` ships (CatDog's wheel)."""


class RolloutError(CatDogError):
    """A rolling deploy, restart or rollback refused before it started (``fab rollback`` with no
    release to go back to); the message names the devices and what to do."""


class WorkerRefused(CatDogError):
    """A worker refused to start (for example as root without ``allow_root``)."""

    exit_status = 3


class TaskModuleError(CatDogError):
    """A task module (the project's ``tasks``, one of ``imports:``) failed to import."""

    exit_status = 2


def exit_status(error: BaseException) -> int:
    """The process exit status a command uses for ``error``."""
    return getattr(error, "exit_status", 1) if isinstance(error, CatDogError) else 1
