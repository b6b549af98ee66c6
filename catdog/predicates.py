"""Predicates on device facts: the ``&mem>=300`` clauses that narrow a target.

>>> Clause.parse("mem>=300")
Clause(fact='mem', op='>=', value=300.0)
>>> Clause.parse("arch=aarch64").holds({"arch": "aarch64"})
True
>>> Clause.parse("python>=3.11").holds({"python": "3.9.2"})
False
>>> Clause.parse("detected=camera").holds({"detected": ["camera", "gpio"]})
True

A clause names a fact of :data:`catdog.facts.FACTS`, an operator (``=``, ``!=``, ``<``, ``<=``,
``>``, ``>=``) and a value; an unknown fact, an operator the fact's kind does not take (text and
lists take ``=`` and ``!=`` only) or a value of the wrong kind is a :class:`TargetError` at once.
A fact a device does not report (no thermal zone: no ``temp``) fails every clause on it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from catdog.errors import TargetError
from catdog.facts import FACTS, FactKind, is_static, version

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le, ">=": operator.ge, "!=": operator.ne, "=": operator.eq,
    "<": operator.lt, ">": operator.gt}
CLAUSE_RE = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|!=|=|<|>)\s*([^<>=!&\s]+)\s*$")
EQUALITY = ("=", "!=")


@dataclass(frozen=True)
class Clause:
    fact: str
    op: str
    value: float | str | tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Clause:
        found = CLAUSE_RE.match(text)
        if not found:
            raise TargetError(f"bad predicate {text!r}: expected FACT OP VALUE like mem>=300, "
                              f"with OP one of {', '.join(OPERATORS)}")
        fact, op, raw = found.groups()
        if fact not in FACTS:
            raise TargetError(f"unknown fact {fact!r} in {text!r}; facts: {', '.join(FACTS)}")
        kind = FACTS[fact][0]
        if kind in (FactKind.TEXT, FactKind.LIST) and op not in EQUALITY:
            raise TargetError(f"bad predicate {text!r}: {fact} is {kind.value}, compared with "
                              f"= or != only")
        return cls(fact, op, _value(kind, raw, text))

    def holds(self, facts: Mapping[str, Any]) -> bool:
        """Whether ``facts`` satisfy this clause (a fact not reported never does)."""
        got = facts.get(self.fact)
        if got is None:
            return False
        kind = FACTS[self.fact][0]
        if kind is FactKind.LIST:
            return (self.value in got) == (self.op == "=")
        if kind is FactKind.VERSION:
            got = version(got)
            if got is None:
                return False
        elif kind is FactKind.NUMBER:
            got = float(got)
        return OPERATORS[self.op](got, self.value)

    def never(self, facts: Mapping[str, Any]) -> bool:
        """Whether a device whose static facts are ``facts`` can never satisfy this clause: it
        fails on a static fact, or asks for more available memory than the device has."""
        if is_static(self.fact):
            return self.fact in facts and not self.holds(facts)
        total = facts.get("mem_total")
        if self.fact == "mem" and total is not None and self.op in (">", ">=", "="):
            return not OPERATORS[self.op](float(total), self.value)
        return False

    def __str__(self) -> str:
        value = ".".join(map(str, self.value)) if isinstance(self.value, tuple) else self.value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return f"{self.fact}{self.op}{value}"


def _value(kind: FactKind, raw: str, text: str) -> float | str | tuple[int, ...]:
    if kind is FactKind.NUMBER:
        try:
            return float(int(raw, 0)) if raw.lower().startswith("0x") else float(raw)
        except ValueError:
            raise TargetError(f"bad predicate {text!r}: expected a number, got {raw!r}") from None
    if kind is FactKind.VERSION:
        parts = version(raw)
        if parts is None:
            raise TargetError(f"bad predicate {text!r}: expected a version like 3.11, got {raw!r}")
        return parts
    return raw


def parse_clauses(parts: list[str], text: str) -> tuple[Clause, ...]:
    """The clauses after a target's ``&`` (none may be empty)."""
    if any(not p.strip() for p in parts):
        raise TargetError(f"bad target {text!r}: an empty clause between '&'s")
    return tuple(Clause.parse(p) for p in parts)


def failing(clauses: tuple[Clause, ...], facts: Mapping[str, Any]) -> list[Clause]:
    return [c for c in clauses if not c.holds(facts)]


def shown(clause: Clause, facts: Mapping[str, Any], never: bool = False) -> str:
    """The clause and what the device reported (``mem>=300 (mem 120.5)``); ``never``: what
    makes it fail for good (``mem>=500 (mem_total 400.0)``)."""
    fact = "mem_total" if never and not is_static(clause.fact) else clause.fact
    got = facts.get(fact)
    if fact != clause.fact:
        return f"{clause} ({fact} {got})"
    return f"{clause} ({clause.fact} {'not reported' if got is None else got})"
