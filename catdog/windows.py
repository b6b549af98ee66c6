"""Run windows: when a task may start.

- ``":05-:55"``: minutes of every hour, both ends inclusive (``:55`` allows 55:00 to 55:59); a
  window like ``":50-:10"`` wraps over the hour.
- ``"08:00-18:00"``: a daily window, both ends inclusive to the minute; ``"22:00-06:00"`` wraps
  over midnight.

Times are in the inventory's ``timezone:`` (default: the machine's local zone).

>>> w = Window.parse(":05-:55")
>>> import datetime as dt
>>> w.is_open(dt.datetime(2026, 1, 1, 10, 55, 30))
True
>>> w.next_opening(dt.datetime(2026, 1, 1, 10, 56))
datetime.datetime(2026, 1, 1, 11, 5)
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from catdog.errors import UsageError

_HOURLY = re.compile(r"^:([0-5][0-9])-:([0-5][0-9])$")
_DAILY = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])-([01]?[0-9]|2[0-3]):([0-5][0-9])$")
FORMS = "':05-:55' (minutes of each hour) or '08:00-18:00' (each day)"
WHAT_WINDOW = "a window like ':05-:55' (minutes of each hour) or '08:00-18:00'"


@dataclass(frozen=True)
class Window:
    text: str
    start: int  # minute of the hour (hourly) or of the day (daily)
    end: int  # inclusive
    daily: bool

    @classmethod
    def parse(cls, text: str) -> Window:
        text = text.strip()
        if match := _HOURLY.match(text):
            return cls(text, int(match[1]), int(match[2]), daily=False)
        if match := _DAILY.match(text):
            return cls(text, int(match[1]) * 60 + int(match[2]),
                       int(match[3]) * 60 + int(match[4]), daily=True)
        raise UsageError(f"window {text!r}: expected {FORMS}")

    def __eq__(self, other: object) -> bool:
        """A window equals another of the same text, and that text itself (``":05-:55"``)."""
        if isinstance(other, str):
            return self.text == other
        if isinstance(other, Window):
            return self.text == other.text
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.text)

    def __str__(self) -> str:
        return self.text

    @property
    def span(self) -> int:
        return 1440 if self.daily else 60

    def _position(self, when: dt.datetime) -> int:
        return when.hour * 60 + when.minute if self.daily else when.minute

    def _inside(self, position: int) -> bool:
        if self.start <= self.end:
            return self.start <= position <= self.end
        return position >= self.start or position <= self.end

    def is_open(self, when: dt.datetime) -> bool:
        return self._inside(self._position(when))

    def next_opening(self, when: dt.datetime) -> dt.datetime:
        """``when`` itself if open, else the first minute the window opens after it."""
        if self.is_open(when):
            return when
        position = self._position(when)
        wait = (self.start - position) % self.span
        minute = when.replace(second=0, microsecond=0)
        return minute + dt.timedelta(minutes=wait)

    def closes_after(self, when: dt.datetime) -> dt.datetime:
        """The moment the window that is open at ``when`` closes (end of its last minute)."""
        position = self._position(when)
        left = (self.end - position) % self.span
        minute = when.replace(second=0, microsecond=0)
        return minute + dt.timedelta(minutes=left + 1)


def zone(name: str | None) -> dt.tzinfo | None:
    """The inventory's timezone (None: the machine's local zone)."""
    return ZoneInfo(name) if name else None


def now_in(name: str | None) -> dt.datetime:
    tz = zone(name)
    return dt.datetime.now(tz) if tz else dt.datetime.now().astimezone()


@functools.lru_cache(maxsize=256)
def parsed(text: str) -> Window:
    """``Window.parse(text)``, parsed once per text (a task's window arrives as text in each
    request's headers)."""
    return Window.parse(text)


def next_start(window: Window | str, timezone: str | None, now: dt.datetime | None = None
               ) -> float | None:
    """None when ``window`` is open now, else the epoch time it next opens."""
    parsed_window = parsed(window) if isinstance(window, str) else window
    when = now or now_in(timezone)
    if parsed_window.is_open(when):
        return None
    return parsed_window.next_opening(when).timestamp()
