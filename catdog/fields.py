"""Typed readers of one YAML field each (names, lists of names, paths, numbers, flags, mappings).

Each returns the field's value, or :data:`~catdog.yamlfile.INVALID` after recording a problem that
names the field and what was expected. :func:`reads` declares, on a dataclass field, how the field is
read: the loader takes a section's allowed keys and its constructor arguments from those
declarations (see :class:`~catdog.inventory.Device`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from catdog.durations import WHAT_DURATION, parse_duration
from catdog.targets import NAME_RE
from catdog.yamlfile import INVALID, Nodes, is_null, join

NAME_RULE = "letters, digits, '-' and '_'"
DOTTED_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NO_SPACE_RE = re.compile(r"^\S+$")

#: how a field is read: ``read(fields, node, field_name)`` -> value or INVALID
Reader = Callable[["Fields", Node, str], Any]


def reads(read: Reader, *, key: str | None = None, local: bool = True) -> dict[str, Any]:
    """Dataclass field metadata: the field is the YAML key ``key`` (default: its own name), read by
    ``read``; ``local=False``: a ``host: local`` device does not inherit it from ``defaults:``."""
    return {"read": read, "key": key, "local": local}


@dataclass(frozen=True)
class Key:
    """One inventory key of a section, as its dataclass declares it."""

    name: str  # in the file
    attribute: str  # of the dataclass
    read: Reader
    local: bool  # (devices) a ``host: local`` device inherits it from ``defaults:``


@cache
def schema(section: type) -> dict[str, Key]:
    """The keys of ``section`` (a dataclass whose fields use :func:`reads`) by name, in order."""
    keys = (Key(f.metadata["key"] or f.name, f.name, f.metadata["read"], f.metadata["local"])
            for f in dataclasses.fields(section) if "read" in f.metadata)
    return {key.name: key for key in keys}


def arguments(section: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """A section's values by key -> its dataclass's constructor arguments."""
    keys = schema(section)
    return {keys[name].attribute: value for name, value in values.items()}


def unknown_key(name: str, allowed: tuple[str, ...]) -> str:
    import difflib  # only for a mistake: not in every worker's memory

    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {name!r}; {hint}expected one of: {', '.join(allowed)}"


def any_invalid(values: Mapping[str, Any]) -> bool:
    return any(v is INVALID for v in values.values())


class Fields(Nodes):
    """Typed readers of one field each: they return the value, or INVALID after a problem."""

    def text(self, node: Node, field: str, what: str, pattern: re.Pattern[str] | None = None
             ) -> Any:
        got = self.value(node, field, as_text=True)
        if got is INVALID:
            return INVALID
        if isinstance(got, str) and got and (pattern is None or pattern.match(got)):
            return got
        return self.bad(node, field, what, got)

    def path(self, node: Node, field: str, what: str) -> Any:
        """A path on the coordinator; ``~`` is the home folder of ``environ`` (``$HOME``)."""
        text = self.text(node, field, what)
        if text is INVALID:
            return INVALID
        home = self.environ.get("HOME")
        if home and (text == "~" or text.startswith("~/")):
            return home + text[1:]
        return os.path.expanduser(text)

    def integer(self, node: Node, field: str, what: str, low: int, high: int | None = None
                ) -> Any:
        got = self.value(node, field)
        if got is INVALID:
            return INVALID
        is_int = isinstance(got, int) and not isinstance(got, bool)
        if is_int and low <= got and (high is None or got <= high):
            return got
        return self.bad(node, field, what, got)

    def boolean(self, node: Node, field: str) -> Any:
        got = self.value(node, field)
        if got is INVALID or isinstance(got, bool):
            return got
        return self.bad(node, field, "true or false", got)

    def choice(self, node: Node, field: str, options: tuple[str, ...]) -> Any:
        what = "one of " + ", ".join(options)
        got = self.text(node, field, what)
        return got if got is INVALID or got in options else self.bad(node, field, what, got)

    def names(self, node: Node, field: str, noun: str = "name",
              pattern: re.Pattern[str] = NAME_RE, rule: str = NAME_RULE) -> Any:
        """A list of distinct names, each matching ``pattern`` -> tuple."""
        if not isinstance(node, SequenceNode):
            return self.wrong(node, field, f"a list of {noun}s")
        found: list[str] = []
        ok = True
        for item in node.value:
            name = self.text(item, field, f"a {noun} ({rule})", pattern)
            if name is not INVALID and name in found:
                self.problem(item, field, f"expected distinct {noun}s, got {name!r} twice")
                name = INVALID
            if name is INVALID:
                ok = False
            else:
                found.append(name)
        return tuple(found) if ok else INVALID

    def mapping(self, node: Node, field: str, what: str, allow_null: bool = True) -> Any:
        """The entries of a mapping (an empty value counts as none when ``allow_null``)."""
        if allow_null and is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            return self.wrong(node, field, what)
        return self.pairs(node, field)

    def fields(self, node: Node, field: str, allowed: tuple[str, ...], what: str,
               allow_null: bool = True) -> Any:
        """Like :meth:`mapping`, refusing keys outside ``allowed`` (with a close match)."""
        found = self.mapping(node, field, what, allow_null)
        if found is INVALID:
            return INVALID
        for name, (key, _) in found.items():
            if name not in allowed:
                self.problem(key, join(field, name), unknown_key(name, allowed))
        return {name: pair for name, pair in found.items() if name in allowed}

    def counts(self, node: Node, field: str) -> Any:
        """A mapping of names to whole numbers of 1 or more (``resources: {camera: 1}``)."""
        found = self.mapping(node, field, "a mapping of resource names to counts, like "
                                          "{camera: 1}")
        if found is INVALID:
            return INVALID
        counts: dict[str, Any] = {}
        for name, (key, value) in found.items():
            where = join(field, name)
            if not NAME_RE.match(name):
                counts[name] = self.bad(key, where, f"a resource name ({NAME_RULE})", name)
            else:
                counts[name] = self.integer(value, where, "a whole number >= 1", low=1)
        return INVALID if any_invalid(counts) else counts

    def health(self, node: Node, field: str) -> Any:
        """``health: {max_temp: 80, throttled: true}``: when a device stops taking shared work."""
        found = self.fields(node, field, ("max_temp", "throttled"), "a mapping with `max_temp:` "
                            "(degrees C) and/or `throttled:` (true or false)")
        if found is INVALID:
            return INVALID
        health: dict[str, Any] = {}
        if "max_temp" in found:
            got = self.value(found["max_temp"][1], join(field, "max_temp"))
            fits = isinstance(got, int | float) and not isinstance(got, bool) and 0 < got < 200
            health["max_temp"] = float(got) if fits else got if got is INVALID else self.bad(
                found["max_temp"][1], join(field, "max_temp"), "degrees C between 0 and 200",
                got)
        if "throttled" in found:
            health["throttled"] = self.boolean(found["throttled"][1], join(field, "throttled"))
        return INVALID if any_invalid(health) else health

    def env(self, node: Node, field: str) -> Any:
        """Environment variables for the worker: names to scalars, kept as written (strings)."""
        found = self.mapping(node, field, "a mapping of environment variable names to values")
        if found is INVALID:
            return INVALID
        env: dict[str, str] = {}
        for name, (key, value) in found.items():
            where = join(field, name)
            if not ENV_NAME_RE.match(name):
                env[name] = self.bad(key, where, "an environment variable name", name)
            elif not isinstance(value, ScalarNode) or is_null(value):
                env[name] = self.wrong(value, where, "a string, number or boolean")
            else:
                text = self.expand(value, where)
                env[name] = INVALID if text is None else text
        return INVALID if any_invalid(env) else env

    def run_on(self, node: Node, field: str) -> Any:
        if isinstance(node, SequenceNode):
            return self.names(node, field, "program name", NO_SPACE_RE, "no spaces")
        got = self.value(node, field)
        if got is INVALID or isinstance(got, bool):
            return got
        return self.bad(node, field, "false, true or a list of program names", got)

    def parsed(self, node: Node, field: str, what: str, parse: Callable[[str], Any],
               errors: tuple[type[Exception], ...] = (ValueError,)) -> Any:
        """A string that ``parse`` turns into a typed value (a ``Window``, a ``Target``...)."""
        text = self.text(node, field, what)
        if text is INVALID:
            return INVALID
        try:
            return parse(text)
        except errors:
            return self.bad(node, field, what, text)

    def checked(self, node: Node, field: str, what: str, check: Callable[[str], str | None]
                ) -> Any:
        """A string that ``check`` accepts, as ``check`` normalizes it."""
        text = self.text(node, field, what)
        if text is INVALID:
            return INVALID
        normal = check(text)
        return self.bad(node, field, what, text) if normal is None else normal

    def duration(self, node: Node, field: str) -> Any:
        """A positive duration (``30s``, ``1.5h``, ``60``) -> seconds."""
        got = self.value(node, field)
        if got is INVALID:
            return INVALID
        seconds = parse_duration(got)
        return self.bad(node, field, WHAT_DURATION, got) if seconds is None else seconds

    def arguments(self, node: Node, field: str) -> Any:
        """A list of positional arguments -> tuple."""
        if not isinstance(node, SequenceNode):
            return self.wrong(node, field, "a list of arguments")
        got = self.value(node, field)
        return INVALID if got is INVALID else tuple(got)

    def keywords(self, node: Node, field: str) -> Any:
        """A mapping of keyword arguments (names that are identifiers)."""
        if not isinstance(node, MappingNode):
            return self.wrong(node, field, "a mapping of keyword arguments")
        got = self.value(node, field)
        if got is INVALID:
            return INVALID
        bad = [name for name in got if not name.isidentifier()]
        return self.bad(node, field, "keyword argument names", bad[0]) if bad else got
