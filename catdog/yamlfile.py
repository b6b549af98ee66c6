"""A YAML file read into located values: every value keeps its line, every problem is recorded.

The file is composed into PyYAML nodes (never constructed wholesale) so every value keeps its line:
mapping keys are their raw text (a key ``on:`` stays ``"on"``), scalar values follow YAML's safe
rules (``port: 22`` is an int), and ``${VAR}`` in a value expands from the environment (``$${`` is a
literal ``${``). Readers record a :class:`~catdog.errors.Problem` and return :data:`INVALID` instead
of raising, so a caller can report every problem of a file at once.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from catdog.errors import Problem

VAR_RE = re.compile(r"(\$\$\{)|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")
NULL_TAG = "tag:yaml.org,2002:null"
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Invalid:
    """The value of a field that has a problem (already recorded)."""

    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Any = _Invalid()


@dataclass
class _Memo:
    """Results by node identity, and the nodes being worked on (to refuse recursive aliases)."""

    results: dict[int, Any] = field(default_factory=dict)
    active: set[int] = field(default_factory=set)


Pairs = dict[str, tuple[Node, Node]]


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def show(value: object) -> str:
    """A short repr for messages, bounded however large or aliased the value is."""
    shorter = reprlib.Repr()
    shorter.maxlevel, shorter.maxstring, shorter.maxother = 3, 60, 60
    return shorter.repr(value)


def _tab_reason(text: str, index: int, column: int) -> str:
    """What to say of a tab where YAML wants spaces (PyYAML: "found character '\\t' ...")."""
    leading = not text[text.rfind("\n", 0, index) + 1:index].strip()
    return (f"a tab at column {column + 1}; "
            f"{'indent' if leading else 'separate values'} with spaces, not tabs")


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


class Nodes:
    """Turns YAML nodes into located Python values, recording problems instead of raising.

    A subclass names its kind of file in the messages of :meth:`compose` (the class attributes).
    """

    #: what to say of a missing file, and what the file should hold (when empty, or at its top)
    missing = "does not exist"
    kind = "a YAML file"
    empty = "expected a mapping"
    top = "a mapping"

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._resolver = yaml.resolver.Resolver()
        self._values = _Memo()
        self._pairs = _Memo()
        #: the text :meth:`compose` read (``source``), and the ``${VAR}`` names :meth:`expand` met (in order)
        self.source = ""
        self.variables: dict[str, None] = {}

    def problem(self, where: Node | int | None, field: str, message: str) -> None:
        line = line_of(where) if isinstance(where, Node) else where
        self.problems.append(Problem(self.file, line, field, message))

    def bad(self, node: Node, field: str, what: str, got: object) -> Any:
        self.problem(node, field, f"expected {what}, got {show(got)}")
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
        mapped = {name: self.value(value, join(field, name))
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
                first = line_of(found[key.value][0])
                self.problem(key, join(field, key.value),
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
                return ""
            self.variables[match[2]] = None
            if match[2] in self.environ:
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

    # -- the file ---------------------------------------------------------------------------

    def compose(self, where: Path) -> MappingNode | None:
        """The file's top-level mapping node, or None after recording why there is none."""
        text = self._read(where)
        if text is None:
            return None
        self.source = text
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            self._syntax_problem(exc, text)
            return None
        except RecursionError:
            self.problem(None, "", "YAML syntax error: the document is nested too deeply")
            return None
        if root is None:
            self.problem(None, "", f"the file is empty; {self.empty}")
        elif not isinstance(root, MappingNode):
            what = "a list" if isinstance(root, SequenceNode) else repr(root.value)[:60]
            self.problem(root, "", f"expected {self.top} at the top, got {what}")
        return root if isinstance(root, MappingNode) else None

    def _read(self, where: Path) -> str | None:
        try:
            return where.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            self.problem(None, "", self.missing)
        except IsADirectoryError:
            self.problem(None, "", f"is a directory; expected {self.kind}")
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
