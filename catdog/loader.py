"""Reading and validating ``catdog.yaml`` into an :class:`~catdog.inventory.Inventory`.

The file is composed into PyYAML nodes (never constructed wholesale) so every value keeps its line:
mapping keys are their raw text (a key ``on:`` stays ``"on"``), scalar values follow YAML's safe
rules (``port: 22`` is an int), and ``${VAR}`` in a value expands from the environment (``$${`` is a
literal ``${``). Every problem is collected, then raised at once as one
:class:`~catdog.errors.InventoryError`; nothing is returned half-checked.

Device fields may stand under ``defaults:``; a device's own values win, ``env`` merges key by key,
and a ``host: local`` device ignores the SSH fields, ``python`` and ``workdir`` of ``defaults:``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from catdog.errors import InventoryError, Problem, TargetError
from catdog.inventory import (
    BROKER_ENV,
    DEFAULT_INVENTORY,
    INVENTORY_ENV,
    LOCAL_HOST,
    POOLS,
    RESERVED_DEVICE_NAMES,
    Device,
    Inventory,
    Limit,
    ScheduleEntry,
    inventory_path,
)
from catdog.targets import NAME_RE, Kind, Target

TOP_KEYS = ("broker", "tmux_socket", "imports", "defaults", "devices", "limits", "schedule",
            "insecure", "timezone")
DEVICE_KEYS = ("host", "port", "user", "key", "known_hosts", "python", "workdir", "capabilities",
               "concurrency", "pool", "env", "allow_root", "run_on")
#: fields of ``defaults:`` that a ``host: local`` device does not inherit
LOCAL_IGNORED = ("user", "port", "key", "known_hosts", "python", "workdir")
SCHEDULE_KEYS = ("task", "every", "cron", "on", "args", "kwargs", "window", "limit")

NAME_RULE = "letters, digits, '-' and '_'"
DOTTED_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SOCKET_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
NO_SPACE_RE = re.compile(r"^\S+$")
BROKER_RE = re.compile(r"^rediss?://", re.IGNORECASE)
RATE_RE = re.compile(r"^\s*([1-9][0-9]*)\s*/\s*([smh])\s*$")
DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smhd]?)\s*$")
CRON_FIELD_RE = re.compile(r"^[0-9*/,-]+$")
MINUTES_WINDOW_RE = re.compile(r"^:([0-9]{2})-:([0-9]{2})$")
HOURS_WINDOW_RE = re.compile(r"^([0-9]{1,2}):([0-9]{2})-([0-9]{1,2}):([0-9]{2})$")
VAR_RE = re.compile(r"(\$\$\{)|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")
PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
NULL_TAG = "tag:yaml.org,2002:null"
MERGE_TAG = "tag:yaml.org,2002:merge"

WHAT_BROKER = "a redis:// or rediss:// URL"
WHAT_DURATION = "a positive duration like 30s, 5m, 1h, 1d or a number of seconds"
WHAT_CRON = 'a cron expression of 5 fields like "*/5 * * * *"'
WHAT_WINDOW = "a window like ':05-:55' (minutes of each hour) or '08:00-18:00'"
WHAT_TIMEZONE = "an IANA time zone name like Europe/Paris or UTC"
WHAT_TARGET = "a target (a device name, cap:NAME, all:NAME or all)"
NEEDS_BROKER = (
    "a remote device needs a broker it can reach, and there is none; set `broker: "
    "redis://:${CATDOG_REDIS_PASSWORD}@<coordinator address>:6379/0` or export "
    f"${BROKER_ENV}"
)


def load_inventory(path: str | os.PathLike[str] | None = None,
                   environ: Mapping[str, str] | None = None) -> Inventory:
    """Read, validate and return the inventory; raise one :class:`InventoryError` listing every
    problem.

    ``path`` None looks for ``$CATDOG_INVENTORY``, else ``./catdog.yaml``. ``environ`` (default
    ``os.environ``) serves ``${VAR}`` expansion and ``$CATDOG_BROKER_URL``.
    """
    environ = os.environ if environ is None else environ
    where = inventory_path(path, environ)
    shown = os.fspath(path) if path else environ.get(INVENTORY_ENV) or DEFAULT_INVENTORY
    checker = _Checker(str(shown), environ)
    root = checker.compose(where)
    inventory = checker.inventory(root, where) if root is not None else None
    if checker.problems or inventory is None:
        raise InventoryError(sorted(checker.problems, key=lambda p: p.line or 0))
    return inventory


def check_broker_url(url: str, insecure: bool) -> str | None:
    """Why ``url`` cannot serve as the fleet's broker, or None when it can.

    A broker beyond loopback needs a password or TLS (``rediss://``), unless ``insecure``.

    >>> check_broker_url("redis://:s3cret@192.168.10.113:6379/0", insecure=False) is None
    True
    >>> check_broker_url("redis://127.0.0.1:6379/0", insecure=False) is None
    True
    >>> check_broker_url("http://localhost", insecure=False)
    "expected a redis:// or rediss:// URL, got scheme 'http'"
    """
    try:
        parts = urlsplit(url.strip())
        host, _ = parts.hostname, parts.port
    except ValueError as exc:
        return f"expected {WHAT_BROKER}, got one that cannot be parsed ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        return f"expected {WHAT_BROKER}, got " + (f"scheme {scheme!r}" if scheme else "no scheme")
    if not host:
        return f"expected {WHAT_BROKER} with a host, like redis://:PASSWORD@HOST:6379/0"
    problem = check_tls_options(parts.query) if scheme == "rediss" else None
    if problem:
        return problem
    if (scheme == "rediss" and tls_verified(parts.query)) or parts.password or insecure \
            or _is_loopback(host):
        return None
    if scheme == "rediss":
        return (f"the broker host {host} is not loopback and ssl_cert_reqs turns off the check "
                f"of its certificate: give its CA with ?ssl_ca_certs=PATH instead, or a "
                f"password, or set `insecure: true`")
    return (f"the broker host {host} is not loopback, so it needs a password "
            f"(redis://:PASSWORD@{host}:6379/0) or TLS (rediss://...); "
            "or set `insecure: true` to allow a broker without either")


TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def check_tls_options(query: str) -> str | None:
    """Why the TLS options of a ``rediss://`` URL's query cannot work, or None."""
    for key, value in parse_qsl(query):
        if key in TLS_FILES and not Path(value).is_file():
            return (f"{key}={value}: no such file (the same path must hold it on the "
                    f"coordinator and on every device)")
    return None


def tls_verified(query: str) -> bool:
    """Whether a ``rediss://`` URL checks the server's certificate (the default; only
    ``ssl_cert_reqs=none`` or ``optional`` turn that off)."""
    reqs = dict(parse_qsl(query)).get("ssl_cert_reqs", "required")
    return reqs.lower() in ("required", "cert_required")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Invalid:
    """The value of a field that has a problem (already recorded)."""

    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Any = _Invalid()


@dataclass(frozen=True)
class _Got:
    """A device field's value and the line it came from."""

    value: Any
    line: int | None


@dataclass
class _Memo:
    """Results by node identity, and the nodes being worked on (to refuse recursive aliases)."""

    results: dict[int, Any] = field(default_factory=dict)
    active: set[int] = field(default_factory=set)


Pairs = dict[str, tuple[Node, Node]]
Parser = Callable[[Node, str], Any]


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _show(value: object) -> str:
    """A short repr for messages, bounded however large or aliased the value is."""
    shorter = reprlib.Repr()
    shorter.maxlevel, shorter.maxstring, shorter.maxother = 3, 60, 60
    return shorter.repr(value)


def _tab_reason(text: str, index: int, column: int) -> str:
    """What to say of a tab where YAML wants spaces (PyYAML: "found character '\\t' ...")."""
    leading = not text[text.rfind("\n", 0, index) + 1:index].strip()
    return (f"a tab at column {column + 1}; "
            f"{'indent' if leading else 'separate values'} with spaces, not tabs")


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


def _unknown_key(name: str, allowed: tuple[str, ...]) -> str:
    import difflib  # only for a mistake: not in every worker's memory

    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {name!r}; {hint}expected one of: {', '.join(allowed)}"


def parse_duration(value: object) -> float | None:
    """``value`` as a positive number of seconds (``60``, ``"30s"``, ``"1.5h"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION_RE.match(value)):
        seconds = float(match[1]) * DURATION_UNITS[match[2]]
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _window(text: str) -> str | None:
    """``text`` as a window (``:05-:55`` or ``08:00-18:00``), or None."""
    text = text.strip()
    if match := MINUTES_WINDOW_RE.match(text):
        return text if all(int(m) <= 59 for m in match.groups()) else None
    if match := HOURS_WINDOW_RE.match(text):
        hours, minutes = match.groups()[0::2], match.groups()[1::2]
        fits = all(int(h) <= 23 for h in hours) and all(int(m) <= 59 for m in minutes)
        return text if fits else None
    return None


def _cron(text: str) -> str | None:
    """``text`` as a 5-field cron expression, or None."""
    fields = text.split()
    fits = len(fields) == 5 and all(CRON_FIELD_RE.match(f) for f in fields)
    return " ".join(fields) if fits else None


def _target(text: str) -> str | None:
    """``text`` as a target string (``pi4``, ``cap:camera``, ...), or None."""
    try:
        return str(Target.parse(text))
    except TargetError:
        return None


def _reachable(text: str, listed: Mapping[str, Any]) -> bool:
    """Whether a device of ``listed`` (name -> capabilities, INVALID when unknown) can ever
    satisfy the target ``text``; when in doubt, yes (the devices' own problems come first)."""
    target = Target.parse(text)
    if target.kind is Kind.EVERY:
        return True
    if target.kind is Kind.DEVICE:
        return target.name in listed
    known = [caps for caps in listed.values() if caps is not INVALID]
    return any(target.name in caps for caps in known) or len(known) < len(listed)


def _any_invalid(values: Mapping[str, Any]) -> bool:
    return any(v is INVALID for v in values.values())


def _merge(defaults: dict[str, _Got], own: dict[str, _Got]) -> dict[str, _Got]:
    """A device's fields over ``defaults:`` (``env`` merged key by key; local devices skip SSH)."""
    host = own.get("host") or defaults.get("host")
    local = host is not None and host.value == LOCAL_HOST
    merged = {k: g for k, g in defaults.items() if not (local and k in LOCAL_IGNORED)}
    merged.update(own)
    base, mine = defaults.get("env"), own.get("env")
    if base and mine and isinstance(base.value, dict) and isinstance(mine.value, dict):
        merged["env"] = _Got({**base.value, **mine.value}, mine.line)
    return merged


class _Nodes:
    """Turns YAML nodes into located Python values, recording problems instead of raising."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._resolver = yaml.resolver.Resolver()
        self._values = _Memo()
        self._pairs = _Memo()

    def problem(self, where: Node | int | None, field: str, message: str) -> None:
        line = _line(where) if isinstance(where, Node) else where
        self.problems.append(Problem(self.file, line, field, message))

    def bad(self, node: Node, field: str, what: str, got: object) -> Any:
        self.problem(node, field, f"expected {what}, got {_show(got)}")
        return INVALID

    def wrong(self, node: Node, field: str, what: str) -> Any:
        """Record that ``node`` is not ``what`` (unless its value already had a problem)."""
        got = self.value(node, field)
        return INVALID if got is INVALID else self.bad(node, field, what, got)

    def value(self, node: Node, field: str, as_text: bool = False) -> Any:
        """The Python value of ``node`` with ``${VAR}`` expanded; INVALID after a problem.

        ``as_text`` keeps an expanded scalar a string instead of resolving it again.
        """
        if isinstance(node, ScalarNode):
            return self._scalar(node, field, as_text)
        return self._once(self._values, node, field, INVALID, self._collection)

    def pairs(self, node: MappingNode, field: str) -> Pairs:
        """The mapping's entries by raw key text, in file order; duplicates and bad keys refused."""
        found: Pairs = self._once(self._pairs, node, field, {}, self._collect_pairs)
        return found

    def _once(self, memo: _Memo, node: Node, field: str, fallback: Any,
              build: Callable[[Any, str], Any]) -> Any:
        key = id(node)
        if key in memo.results:
            return memo.results[key]
        if key in memo.active:
            self.problem(node, field, "expected a value, got an alias (*name) inside its own anchor")
            return fallback
        memo.active.add(key)
        try:
            result = build(node, field)
        finally:
            memo.active.discard(key)
        memo.results[key] = result
        return result

    def _collection(self, node: Node, field: str) -> Any:
        if isinstance(node, SequenceNode):
            items = [self.value(item, f"{field}[{i}]") for i, item in enumerate(node.value)]
            return INVALID if any(item is INVALID for item in items) else items
        assert isinstance(node, MappingNode)
        mapped = {name: self.value(value, _join(field, name))
                  for name, (_, value) in self.pairs(node, field).items()}
        return INVALID if any(v is INVALID for v in mapped.values()) else mapped

    def _collect_pairs(self, node: MappingNode, field: str) -> Pairs:
        found: Pairs = {}
        merges: list[Node] = []
        for key, value in node.value:
            if key.tag == MERGE_TAG:
                merges.append(value)
            elif not isinstance(key, ScalarNode):
                self.wrong(key, field, "a name as key")
            elif key.value in found:
                first = _line(found[key.value][0])
                self.problem(key, _join(field, key.value),
                             f"duplicate key {key.value!r} (first at line {first})")
            else:
                found[key.value] = (key, value)
        for source in merges:
            self._merge_into(found, source, field)
        return found

    def _merge_into(self, found: Pairs, source: Node, field: str) -> None:
        """YAML merge keys (``<<: *base``): the mapping's own keys win, then earlier sources."""
        for item in source.value if isinstance(source, SequenceNode) else [source]:
            if not isinstance(item, MappingNode):
                self.wrong(item, field, "a mapping (or a list of mappings) after '<<'")
                continue
            for name, pair in self.pairs(item, field).items():
                found.setdefault(name, pair)

    def _scalar(self, node: ScalarNode, field: str, as_text: bool) -> Any:
        if "${" not in node.value:
            return self._construct(node, field)
        text = self.expand(node, field)
        if text is None:
            return INVALID
        if as_text:
            return text
        tag = node.tag
        if node.style is None and tag == self._implicit_tag(node.value):
            tag = self._implicit_tag(text)  # a plain scalar: `port: ${SSH_PORT}` is an int
        expanded = ScalarNode(tag, text, node.start_mark, node.end_mark, style=node.style)
        return self._construct(expanded, field)

    def _implicit_tag(self, text: str) -> str:
        return str(self._resolver.resolve(ScalarNode, text, (True, False)))

    def _construct(self, node: ScalarNode, field: str) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, ArithmeticError, RecursionError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return self.bad(node, field, f"a YAML value ({reason})", node.value)

    def expand(self, node: ScalarNode, field: str) -> str | None:
        """The scalar's raw text with ``${VAR}`` expanded; None after recording a problem."""
        missing: list[str] = []
        malformed = False

        def replace(match: re.Match[str]) -> str:
            nonlocal malformed
            if match[1]:
                return "${"
            if match[2] is None:
                malformed = True
            elif match[2] in self.environ:
                return self.environ[match[2]]
            else:
                missing.append(match[2])
            return ""

        text = VAR_RE.sub(replace, node.value)
        for name in dict.fromkeys(missing):
            self.problem(node, field,
                         f"environment variable {name} is not set; export it before running")
        if malformed:
            self.bad(node, field, "${NAME} (letters, digits and '_') or $${ for a literal '${'",
                     node.value)
        return None if missing or malformed else text


class _Fields(_Nodes):
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
        if allow_null and _is_null(node):
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
                self.problem(key, _join(field, name), _unknown_key(name, allowed))
        return {name: pair for name, pair in found.items() if name in allowed}

    def env(self, node: Node, field: str) -> Any:
        """Environment variables for the worker: names to scalars, kept as written (strings)."""
        found = self.mapping(node, field, "a mapping of environment variable names to values")
        if found is INVALID:
            return INVALID
        env: dict[str, str] = {}
        for name, (key, value) in found.items():
            where = _join(field, name)
            if not ENV_NAME_RE.match(name):
                env[name] = self.bad(key, where, "an environment variable name", name)
            elif not isinstance(value, ScalarNode) or _is_null(value):
                env[name] = self.wrong(value, where, "a string, number or boolean")
            else:
                text = self.expand(value, where)
                env[name] = INVALID if text is None else text
        return INVALID if _any_invalid(env) else env

    def run_on(self, node: Node, field: str) -> Any:
        if isinstance(node, SequenceNode):
            return self.names(node, field, "program name", NO_SPACE_RE, "no spaces")
        got = self.value(node, field)
        if got is INVALID or isinstance(got, bool):
            return got
        return self.bad(node, field, "false, true or a list of program names", got)


class _Checker(_Fields):
    """Reads one inventory file, section by section, collecting every problem."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        super().__init__(file, environ)
        self._host_lines: dict[str, int | None] = {}
        self._listed: dict[str, Any] = {}  # every device named, to its capabilities (or INVALID)
        self.device_parsers: dict[str, Parser] = {
            "host": partial(self.text, what="a host name or 'local'", pattern=NO_SPACE_RE),
            "port": partial(self.integer, what="a port number 1..65535", low=1, high=65535),
            "user": partial(self.text, what="a user name"),
            "key": partial(self.path, what="a path to an SSH private key"),
            "known_hosts": partial(self.path, what="a path to a known_hosts file"),
            "python": partial(self.text, what="a path to a Python interpreter"),
            "workdir": partial(self.text, what="a folder path"),
            "capabilities": self.names,
            "concurrency": partial(self.integer, what="a whole number >= 1", low=1),
            "pool": partial(self.choice, options=POOLS),
            "env": self.env,
            "allow_root": self.boolean,
            "run_on": self.run_on,
        }

    # -- the file ---------------------------------------------------------------------------

    def compose(self, where: Path) -> MappingNode | None:
        """The file's top-level mapping node, or None after recording why there is none."""
        text = self._read(where)
        if text is None:
            return None
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            self._syntax_problem(exc, text)
            return None
        except RecursionError:
            self.problem(None, "", "YAML syntax error: the document is nested too deeply")
            return None
        if root is None:
            self.problem(None, "", "the file is empty; expected a mapping with at least `devices:`")
        elif not isinstance(root, MappingNode):
            what = "a list" if isinstance(root, SequenceNode) else repr(root.value)[:60]
            self.problem(root, "", f"expected a mapping (`devices:` ...) at the top, got {what}")
        return root if isinstance(root, MappingNode) else None

    def _read(self, where: Path) -> str | None:
        try:
            return where.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            self.problem(None, "", "does not exist; choose another inventory with "
                                   f"--inventory PATH or ${INVENTORY_ENV}")
        except IsADirectoryError:
            self.problem(None, "", "is a directory; expected an inventory file")
        except UnicodeDecodeError as exc:
            line = exc.object[:exc.start].count(b"\n") + 1
            self.problem(line, "", f"expected UTF-8 text, got byte {exc.object[exc.start]:#x}")
        except OSError as exc:
            self.problem(None, "", f"cannot be read: {exc.strerror or exc}")
        return None

    def _syntax_problem(self, exc: yaml.YAMLError, text: str) -> None:
        line: int | None = None
        if isinstance(exc, yaml.MarkedYAMLError):
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            reason = exc.problem or exc.context or "invalid YAML"
            if exc.context and exc.problem:
                since = f" from line {exc.context_mark.line + 1}" if exc.context_mark else ""
                reason += f" ({exc.context}{since})"
            if "<block" in reason:
                reason += "; check the indentation"
            if exc.problem and "'\\t'" in exc.problem and exc.problem_mark is not None:
                reason = _tab_reason(text, exc.problem_mark.index, exc.problem_mark.column)
        elif isinstance(exc, yaml.reader.ReaderError):
            line = text.count("\n", 0, exc.position) + 1
            reason = f"unacceptable character {exc.character!r}: {exc.reason}"
        else:
            reason = str(exc)
        self.problem(line, "", f"YAML syntax error: {reason}")

    # -- the sections -----------------------------------------------------------------------

    def inventory(self, root: MappingNode, where: Path) -> Inventory | None:
        top = self.fields(root, "", TOP_KEYS, "a mapping")
        settings = self._settings(top)
        defaults = self._device_values(self._section(top, "defaults", DEVICE_KEYS), "defaults")
        devices = self._devices(top.get("devices"), root, defaults)
        limits_found = self._section(top, "limits")
        limits = self._limits(limits_found)
        schedule = self._schedule(self._section(top, "schedule"), tuple(limits_found))
        self._check_broker(top.get("broker"), settings, devices)
        if self.problems:
            return None
        return Inventory(path=where, devices=devices, limits=limits, schedule=schedule, **settings)

    def _section(self, top: Pairs, name: str, allowed: tuple[str, ...] | None = None) -> Pairs:
        if name not in top:
            return {}
        node = top[name][1]
        what = "a mapping of " + ("device fields" if allowed else f"{name} by name")
        found = (self.fields(node, name, allowed, what) if allowed
                 else self.mapping(node, name, what))
        return {} if found is INVALID else dict(found)

    def _settings(self, top: Pairs) -> dict[str, Any]:
        parsers: dict[str, Parser] = {
            "broker": partial(self.text, what=WHAT_BROKER, pattern=BROKER_RE),
            "tmux_socket": partial(self.text, what="a tmux socket name (letters, digits, '_', "
                                   "'.' and '-')", pattern=SOCKET_RE),
            "imports": partial(self.names, noun="module name", pattern=DOTTED_RE,
                               rule="dotted, like mylab.tasks"),
            "insecure": self.boolean,
            "timezone": self._timezone,
        }
        settings: dict[str, Any] = {}
        for name, parse in parsers.items():
            if name in top and (got := parse(top[name][1], name)) is not INVALID:
                settings[name] = got
        return settings

    def _timezone(self, node: Node, field: str) -> Any:
        name = self.text(node, field, WHAT_TIMEZONE)
        if name is INVALID:
            return INVALID
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            return self.bad(node, field, WHAT_TIMEZONE, name)
        return name

    # -- devices ----------------------------------------------------------------------------

    def _device_values(self, found: Pairs, prefix: str) -> dict[str, _Got]:
        return {name: _Got(self.device_parsers[name](node, f"{prefix}.{name}"), _line(key))
                for name, (key, node) in found.items()}

    def _devices(self, entry: tuple[Node, Node] | None, root: Node,
                 defaults: dict[str, _Got]) -> dict[str, Device]:
        what = "a mapping of device names to their fields"
        if entry is None:
            self.problem(root, "devices", f"required field missing; expected {what}, "
                                          "like `pi4: {host: 192.168.1.20}`")
            return {}
        listed = self.mapping(entry[1], "devices", what, allow_null=False)
        if listed is INVALID:
            return {}
        if not listed:
            self.bad(entry[0], "devices", "at least one device", listed)
        devices = {}
        for name, (key, node) in listed.items():
            device = self._device(name, key, node, defaults)
            if device is not None:
                devices[name] = device
        return devices

    def _device(self, name: str, key: Node, node: Node,
                defaults: dict[str, _Got]) -> Device | None:
        field = f"devices.{name}"
        self._listed[name] = INVALID
        named = self._device_name_ok(name, key, field)
        found = self.fields(node, field, DEVICE_KEYS, "a mapping of device fields (at least "
                            "`host:`)", allow_null=False)
        if found is INVALID:
            return None
        merged = _merge(defaults, self._device_values(found, field))
        self._listed[name] = merged.get("capabilities", _Got((), None)).value
        if "host" not in merged:
            self.problem(key, f"{field}.host",
                         "required field missing; expected a host name or 'local'")
            return None
        self._host_lines[name] = merged["host"].line
        fits = self._pool_fits(merged, key, field)
        if not (named and fits) or any(g.value is INVALID for g in merged.values()):
            return None
        return Device(name=name, line=_line(key), **{k: g.value for k, g in merged.items()})

    def _device_name_ok(self, name: str, key: Node, field: str) -> bool:
        if not NAME_RE.match(name):
            self.bad(key, field, f"a device name ({NAME_RULE})", name)
        elif name in RESERVED_DEVICE_NAMES:
            self.bad(key, field, f"a device name other than {', '.join(RESERVED_DEVICE_NAMES)} "
                                 f"(catdog-{name} is the session of `fab {name}`)", name)
        elif name == "all":
            self.bad(key, field, "a device name other than 'all' (the target of every device)",
                     name)
        else:
            return True
        return False

    def _pool_fits(self, merged: dict[str, _Got], key: Node, field: str) -> bool:
        pool = merged.get("pool")
        concurrency = merged.get("concurrency")
        if pool is None or pool.value != "solo" or concurrency is None:
            return True
        if concurrency.value is INVALID or concurrency.value == 1:
            return True
        # at the later of the two lines (where the clash shows, reading down), naming the other
        if (concurrency.line or 0) >= (pool.line or 0):
            self.problem(concurrency.line, f"{field}.concurrency",
                         f"pool 'solo' (line {pool.line}) runs one task at a time; expected "
                         f"concurrency 1, got {concurrency.value!r}")
        else:
            self.problem(pool.line, f"{field}.pool", "pool 'solo' runs one task at a time; "
                         f"expected concurrency 1 (line {concurrency.line}), got "
                         f"{concurrency.value!r}")
        return False

    # -- limits and schedule ----------------------------------------------------------------

    def _limits(self, found: Pairs) -> dict[str, Limit]:
        limits = {}
        for name, (key, node) in found.items():
            field = f"limits.{name}"
            if not NAME_RE.match(name):
                self.bad(key, field, f"a limit name ({NAME_RULE})", name)
                continue
            text = self.text(node, field, "a rate like 10/s, 100/m or 360/h (a positive whole "
                                          "number per second, minute or hour)", RATE_RE)
            if text is not INVALID:
                match = RATE_RE.match(text)
                assert match is not None
                limits[name] = Limit(name, int(match[1]), PERIODS[match[2]], text.strip())
        return limits

    def _schedule(self, found: Pairs, limits: tuple[str, ...]) -> dict[str, ScheduleEntry]:
        schedule = {}
        for name, (key, node) in found.items():
            entry = self._entry(name, key, node, limits)
            if entry is not None:
                schedule[name] = entry
        return schedule

    def _entry(self, name: str, key: Node, node: Node, limits: tuple[str, ...]
               ) -> ScheduleEntry | None:
        field = f"schedule.{name}"
        named = NAME_RE.match(name) or self.bad(key, field, f"a schedule name ({NAME_RULE})", name)
        spec = self.fields(node, field, SCHEDULE_KEYS, "a mapping with `task:` and `every:` or "
                           "`cron:`", allow_null=False)
        if spec is INVALID:
            return None
        parsers = self._entry_parsers()
        values = {k: parsers[k](n, f"{field}.{k}") for k, (_, n) in spec.items()}
        complete = self._entry_complete(values, key, field)
        fits = self._entry_fits(values, spec, field, limits)
        if named is INVALID or not (complete and fits) or _any_invalid(values):
            return None
        if "every" in values:
            values["every_s"] = values.pop("every")
        return ScheduleEntry(name=name, line=_line(key), **values)

    def _entry_parsers(self) -> dict[str, Parser]:
        return {
            "task": partial(self.text, what="a task name like tasks.sensors.read_temperature",
                            pattern=DOTTED_RE),
            "every": self._every,
            "cron": partial(self._checked_text, what=WHAT_CRON, check=_cron),
            "on": partial(self._checked_text, what=WHAT_TARGET, check=_target),
            "args": self._args,
            "kwargs": self._kwargs,
            "window": partial(self._checked_text, what=WHAT_WINDOW, check=_window),
            "limit": partial(self.text, what=f"a limit name ({NAME_RULE})", pattern=NAME_RE),
        }

    def _checked_text(self, node: Node, field: str, what: str,
                      check: Callable[[str], str | None]) -> Any:
        """A string that ``check`` accepts, as ``check`` normalizes it."""
        text = self.text(node, field, what)
        if text is INVALID:
            return INVALID
        normal = check(text)
        return self.bad(node, field, what, text) if normal is None else normal

    def _every(self, node: Node, field: str) -> Any:
        got = self.value(node, field)
        if got is INVALID:
            return INVALID
        seconds = parse_duration(got)
        return self.bad(node, field, WHAT_DURATION, got) if seconds is None else seconds

    def _args(self, node: Node, field: str) -> Any:
        if not isinstance(node, SequenceNode):
            return self.wrong(node, field, "a list of arguments")
        got = self.value(node, field)
        return INVALID if got is INVALID else tuple(got)

    def _kwargs(self, node: Node, field: str) -> Any:
        if not isinstance(node, MappingNode):
            return self.wrong(node, field, "a mapping of keyword arguments")
        got = self.value(node, field)
        if got is INVALID:
            return INVALID
        bad = [name for name in got if not name.isidentifier()]
        return self.bad(node, field, "keyword argument names", bad[0]) if bad else got

    def _entry_complete(self, values: dict[str, Any], key: Node, field: str) -> bool:
        """``task:`` is there, and exactly one of ``every:`` and ``cron:``."""
        ok = "task" in values
        if not ok:
            self.problem(key, f"{field}.task", "required field missing; expected a task name "
                                               "like tasks.sensors.read_temperature")
        if "every" in values and "cron" in values:
            self.problem(key, field, "expected exactly one of 'every' or 'cron', got both")
            ok = False
        elif "every" not in values and "cron" not in values:
            self.problem(key, f"{field}.every", f"required field missing; expected {WHAT_DURATION}"
                                                f" (`every:`) or {WHAT_CRON} (`cron:`)")
            ok = False
        return ok

    def _entry_fits(self, values: dict[str, Any], spec: Pairs, field: str,
                    limits: tuple[str, ...]) -> bool:
        """``on:`` names what this inventory has and ``limit:`` a name from ``limits:``."""
        ok = True
        limit = values.get("limit", INVALID)
        if limit is not INVALID and limit not in limits:
            known = ", ".join(limits) or "there are none"
            self.problem(spec["limit"][1], f"{field}.limit",
                         f"expected a name from `limits:` ({known}), got {limit!r}")
            ok = False
        on = values.get("on", INVALID)
        if on is not INVALID and self._listed and not _reachable(on, self._listed):
            capabilities = sorted({c for caps in self._listed.values() if caps is not INVALID
                                   for c in caps})
            self.problem(spec["on"][1], f"{field}.on",
                         f"no device can ever run {on!r}; devices: {', '.join(self._listed)}; "
                         f"capabilities: {', '.join(capabilities) or '(none)'}")
            ok = False
        return ok

    # -- the broker -------------------------------------------------------------------------

    def _check_broker(self, entry: tuple[Node, Node] | None, settings: dict[str, Any],
                      devices: dict[str, Device]) -> None:
        from_env = self.environ.get(BROKER_ENV) or None
        url = from_env or settings.get("broker")
        if url:
            message = check_broker_url(url, bool(settings.get("insecure", False)))
            if message and from_env:
                self.problem(None, "broker", f"{message} (the URL comes from ${BROKER_ENV})")
            elif message and entry is not None:
                self.problem(entry[1], "broker", message)
            return
        remote = [name for name, d in devices.items() if not d.is_local]
        if remote and entry is None:
            self.problem(self._host_lines.get(remote[0]), f"devices.{remote[0]}.host",
                         f"{NEEDS_BROKER} (remote: {', '.join(remote)})")
