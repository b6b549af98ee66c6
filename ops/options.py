"""The values of the ``fab`` commands' options, checked in one place.

invoke casts an option to the type of its default and lets a bad value escape as a ``ValueError``
with a traceback, so :mod:`ops.fab` declares the options with a value as strings and the commands
read them here: a bad value is one :class:`~catdog.errors.UsageError` line naming the option and
what it accepts (exit status 2), before anything starts.
"""

from __future__ import annotations

import ipaddress
import math
import re

from catdog.errors import UsageError

#: a host name as Flower (tornado) binds it: letters, digits, dots and dashes
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def seconds(option: str, value: str | float) -> float:
    """A positive number of seconds.

    >>> seconds("--timeout", "2.5")
    2.5
    >>> seconds("--timeout", "abc")
    Traceback (most recent call last):
    catdog.errors.UsageError: --timeout 'abc': expected a number of seconds above 0, like 30 or 2.5
    """
    try:
        found = float(value)
    except ValueError:
        found = math.nan
    if not math.isfinite(found) or found <= 0:
        raise UsageError(f"{option} {value!r}: expected a number of seconds above 0, "
                         f"like 30 or 2.5")
    return found


def count(option: str, value: str | int) -> int:
    """A whole number of at least 1.

    >>> count("--lines", "0")
    Traceback (most recent call last):
    catdog.errors.UsageError: --lines '0': expected a whole number of at least 1, like 50
    """
    try:
        found = int(value)
    except ValueError:
        found = 0
    if found < 1:
        raise UsageError(f"{option} {value!r}: expected a whole number of at least 1, like 50")
    return found


def port(option: str, value: str | int) -> int:
    """A TCP port, 1 to 65535.

    >>> port("--port", "70000")
    Traceback (most recent call last):
    catdog.errors.UsageError: --port '70000': expected a TCP port from 1 to 65535, like 5555
    """
    try:
        found = int(value)
    except ValueError:
        found = 0
    if not 1 <= found <= 65535:
        raise UsageError(f"{option} {value!r}: expected a TCP port from 1 to 65535, like 5555")
    return found


def address(option: str, value: str) -> str:
    """An IP address or a host name to listen on.

    >>> address("--address", "0.0.0.0")
    '0.0.0.0'
    >>> address("--address", "my host")
    Traceback (most recent call last):
    catdog.errors.UsageError: --address 'my host': expected an IP address or host name to listen \
on, like 127.0.0.1 or 0.0.0.0
    """
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        if _HOSTNAME.match(value):
            return value
    raise UsageError(f"{option} {value!r}: expected an IP address or host name to listen on, "
                     f"like 127.0.0.1 or 0.0.0.0")


def devices(option: str, value: str | None) -> str | None:
    """Comma-separated device names, each once (None: all); which exist, the inventory says.

    >>> devices("--devices", " cam, probe,cam")
    'cam,probe'
    >>> devices("--devices", ",")
    Traceback (most recent call last):
    catdog.errors.UsageError: --devices ',': expected comma-separated device names, like cam,probe
    """
    if value is None or value == "":
        return None
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if not names:
        raise UsageError(f"{option} {value!r}: expected comma-separated device names, "
                         f"like cam,probe")
    return ",".join(names)


def text(option: str, value: str | None) -> str | None:
    """Any text; empty is None (the option not given)."""
    return value or None


def duration(option: str, value: str | None) -> float | None:
    """A period like 90s, 15m, 1h or 2d, in seconds (empty: None, no limit).

    >>> duration("--since", "15m")
    900.0
    >>> duration("--since", "soon")
    Traceback (most recent call last):
    catdog.errors.UsageError: --since 'soon': expected a duration like 90s, 15m, 1h or 2d
    """
    from catdog.durations import parse_duration

    if not value:
        return None
    found = parse_duration(value)
    if found is None:
        raise UsageError(f"{option} {value!r}: expected a duration like 90s, 15m, 1h or 2d")
    return float(found)


def count_or_zero(option: str, value: str | int) -> int:
    """A whole number, 0 or more.

    >>> count_or_zero("--canary", "0")
    0
    >>> count_or_zero("--canary", "-1")
    Traceback (most recent call last):
    catdog.errors.UsageError: --canary '-1': expected a whole number of 0 or more, like 1
    """
    try:
        found = int(value)
    except ValueError:
        found = -1
    if found < 0:
        raise UsageError(f"{option} {value!r}: expected a whole number of 0 or more, like 1")
    return found


def period_or_zero(option: str, value: str | float) -> float:
    """A period like 60s or 2m, in seconds, or 0 (none).

    >>> period_or_zero("--watch", "2m"), period_or_zero("--watch", "0")
    (120.0, 0.0)
    """
    if str(value).strip() in ("0", "0s", "0.0"):
        return 0.0
    found = duration(option, str(value))
    if found is None:
        raise UsageError(f"{option} {value!r}: expected a duration like 60s or 2m, or 0")
    return found
