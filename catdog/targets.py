"""Targets: where a task runs, parsed once into a small typed value.

>>> Target.parse("pi4")
Target(kind=<Kind.DEVICE: 'device'>, name='pi4', where=())
>>> Target.parse("cap:camera").kind is Kind.CAPABILITY
True
>>> str(Target.parse("all:gpio")), str(Target.parse("all"))
('all:gpio', 'all')
>>> str(Target.parse("cap:camera & mem>=300")), Target.parse("any&temp<70").base
('cap:camera&mem>=300', Target(kind=<Kind.ANY: 'any'>, name='', where=()))

Clauses after ``&`` are predicates on the facts devices report (:mod:`catdog.predicates`); where
they send a call is worked out from live heartbeats (:mod:`catdog.placement`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from catdog.errors import TargetError
from catdog.predicates import Clause, parse_clauses

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
WHAT_TARGET = "a target (a device name, cap:NAME, all:NAME or all)"


class Kind(enum.Enum):
    DEVICE = "device"  # pi4
    CAPABILITY = "cap"  # cap:camera   -> any one device that has it
    EVERY_WITH = "all:"  # all:camera  -> every device that has it
    EVERY = "all"  # all           -> every device
    ANY = "any"  # any             -> any one live device (what no target means)


@dataclass(frozen=True)
class Target:
    kind: Kind
    name: str = ""
    #: predicates on the devices' facts (``cap:camera&mem>=300``)
    where: tuple[Clause, ...] = ()

    @classmethod
    def parse(cls, text: object) -> Target:
        """Parse a target string; raise :class:`TargetError` naming the accepted forms."""
        if isinstance(text, Target):
            return text
        if not isinstance(text, str):
            raise TargetError(f"a target must be a string, got {text!r}")
        if "&" in text:
            head, *clauses = text.split("&")
            return cls(**{**cls.parse(head).__dict__, "where": parse_clauses(clauses, text)})
        text = text.strip()
        if text == "all":
            return cls(Kind.EVERY)
        if text == "any":
            return cls(Kind.ANY)
        prefix, sep, rest = text.partition(":")
        if not sep:
            kind, name = Kind.DEVICE, text
        elif prefix == "cap":
            kind, name = Kind.CAPABILITY, rest
        elif prefix == "all":
            kind, name = Kind.EVERY_WITH, rest
        else:
            raise TargetError(
                f"unknown target {text!r}: expected a device name, 'cap:NAME', 'all:NAME', 'all' or "
                f"'any'"
            )
        if not NAME_RE.match(name):
            raise TargetError(
                f"bad target {text!r}: names use letters, digits, '-' and '_' only"
            )
        return cls(kind, name)

    @property
    def base(self) -> Target:
        """The target without its predicates."""
        return Target(self.kind, self.name) if self.where else self

    @property
    def is_group(self) -> bool:
        """True when the target fans out to one message per device."""
        return self.kind in (Kind.EVERY, Kind.EVERY_WITH)

    def __eq__(self, other: object) -> bool:
        """A target equals another with the same kind and name, and its own text (``"cap:x"``)."""
        if isinstance(other, str):
            return str(self) == other
        if isinstance(other, Target):
            return (self.kind, self.name, self.where) == (other.kind, other.name, other.where)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))

    def __str__(self) -> str:
        if self.where:
            return "&".join([str(self.base), *map(str, self.where)])
        if self.kind is Kind.DEVICE:
            return self.name
        if self.kind is Kind.CAPABILITY:
            return f"cap:{self.name}"
        if self.kind is Kind.EVERY_WITH:
            return f"all:{self.name}"
        return self.kind.value  # "all", "any"
