"""Dependencies between CatDog's packages point one way: ops -> workers -> catdog, nothing back up.

Every module's imports are read from its source (the AST, imports inside functions included, so a
lazy ``from ops... import`` inside a function counts as much as one at the top).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("catdog", "workers", "ops", "bench", "tests")
#: what each package must never import (directly, at any depth in a function)
FORBIDDEN = {
    "catdog": {"workers", "ops", "bench", "tests"},
    "workers": {"ops", "bench", "tests"},
    "bench": {"tests"},
}


def imported_packages(source: str, module: str) -> Iterator[tuple[str, int]]:
    """The top-level packages ``source`` (module ``module``, dotted) imports, with line numbers."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within the module's own package
                yield module.split(".")[0], node.lineno
            elif node.module:
                yield node.module.split(".")[0], node.lineno


def edges() -> Iterator[tuple[str, str, str]]:
    """(importing package, imported package, "file:line") for every import between packages."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for target, line in imported_packages(path.read_text(), module):
                if target in PACKAGES and target != package:
                    yield package, target, f"{path.relative_to(ROOT)}:{line}"


def test_no_package_imports_one_above_it() -> None:
    wrong = [f"{where}: {package} imports {target}" for package, target, where in edges()
             if target in FORBIDDEN.get(package, set())]
    assert wrong == []


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for package, target, _ in edges():
        graph[package].add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or reaches(nxt, goal, seen | {nxt}) for nxt in graph[start] - seen)

    cycles = sorted(p for p in PACKAGES if reaches(p, p, set()))
    assert cycles == [], {p: sorted(graph[p]) for p in cycles}


def test_the_rules_see_imports_inside_functions_and_relative_ones() -> None:
    # the check itself: a lazy import is found like a top-level one; a relative one stays home
    source = "import os\ndef resolve():\n    from ops.embedded_redis import E\n"
    assert sorted(imported_packages(source, "catdog.broker")) == [("ops", 3), ("os", 1)]
    relative = "from . import sibling\nfrom ..b import c\n"
    assert sorted(imported_packages(relative, "ops.sub.a")) == [("ops", 1), ("ops", 2)]


def _modules(*packages: str) -> Iterator[tuple[str, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text())


def _strings(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """Every string literal, and the leading text of every f-string, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield first.value + "{", node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value, node.lineno


def test_names_that_travel_between_processes_have_one_owner() -> None:
    from catdog import records

    headers = {getattr(records, n) for n in dir(records) if n.endswith("_HEADER")}
    headers.add("catdog_{")  # a header name built from an option name
    owners = {"catdog/records.py", "ops/session.py"}
    wrong = []
    for where, tree in _modules("catdog", "workers", "ops"):
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "session_name" \
                    and where != "ops/session.py":
                wrong.append(f"{where}:{node.lineno}: a second session_name")
            if isinstance(node, ast.Name | ast.alias) and where != "catdog/records.py" and \
                    (getattr(node, "id", None) or getattr(node, "name", None)) == "OFFLINE_AFTER_S":
                wrong.append(f"{where}: tests heartbeat freshness itself (Heartbeat.is_fresh)")
        if where in owners:
            continue
        for text, line in _strings(tree):
            if text in headers:
                wrong.append(f"{where}:{line}: spells the header {text!r} (catdog.records owns it)")
            if text == "catdog-{":
                wrong.append(f"{where}:{line}: builds a session name (ops.session.session_name)")
    assert sorted(set(wrong)) == []
