"""The README and docs/: every relative link lands on a file (and heading) that exists, every docs
page is reachable from the README, the README stays short, the performance tables are the results
file's, and the architecture page names modules and objects that exist."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

from bench.markdown import PAGE, render, tables_in

from .conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _prose(text: str) -> str:
    """The text outside code blocks and inline code, where a link is a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text()), re.M)
    return {_slug(h) for h in headings}


def broken_links(page: Path) -> list[str]:
    """Every relative link of ``page`` whose file, or heading, does not exist."""
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        if not found.exists():
            broken.append(f"{page.name}: {target} (no file {found})")
        elif anchor and found.suffix == ".md" and anchor not in _anchors(found):
            broken.append(f"{page.name}: {target} (no heading #{anchor} in {found.name})")
    return broken


def test_every_relative_link_resolves() -> None:
    assert [p.name for p in PAGES if p.parent.name == "docs"], "no docs pages found"
    assert [b for page in PAGES for b in broken_links(page)] == []


def test_the_link_check_sees_a_broken_link_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# Here it is\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#here-it-is) [gone](missing.md) [no](there.md#nowhere)\n"
                    "`[code](missing.md)` and ![img](there.md)\n```\n[fenced](missing.md)\n```\n")
    assert broken_links(page) == [
        f"page.md: missing.md (no file {tmp_path / 'missing.md'})",
        "page.md: there.md#nowhere (no heading #nowhere in there.md)"]


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve()
              for target in LINK.findall(_prose(README.read_text()))}
    pages = {page.resolve() for page in (ROOT / "docs").glob("*.md")} | {ROOT / "SECURITY.md"}
    assert sorted(p.name for p in pages - linked) == []


def test_the_readme_stays_short() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_the_performance_tables_are_the_results_file() -> None:
    """``python -m bench --markdown --page docs/performance.md`` wrote them, and nobody since."""
    shown = tables_in(PAGE.read_text())
    assert shown is not None, f"{PAGE}: no generated block"
    assert shown == render(json.loads((ROOT / "bench" / "results.json").read_text()))


def _has(path: Path, dotted: str) -> bool:
    """``dotted`` (``name`` or ``Class.method``) is defined by the module at ``path``."""
    if path.stem != "__main__":
        found: object = importlib.import_module(
            ".".join(path.relative_to(ROOT).with_suffix("").parts))
        for part in dotted.split("."):
            if not hasattr(found, part):
                return False
            found = getattr(found, part)
        return True
    tree = ast.parse(path.read_text())  # importing it would run it
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return dotted in names


def test_the_architecture_page_names_what_exists() -> None:
    """Each ``pkg/module.py Name`` step of the drawn flows is a real module and object."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    steps = re.findall(r"\b((?:catdog|ops|workers)/[\w/]+\.py)(?:[ \t]+([A-Za-z_][\w.]*))?", text)
    assert len(steps) > 30
    missing = [f"{file} {name}".strip() for file, name in steps
               if not (ROOT / file).exists() or (name and not _has(ROOT / file, name))]
    assert missing == []
    for flow in ("inventory -> plan -> launch", "call -> route -> queue -> worker -> result"):
        assert flow in text


def test_the_field_tables_are_the_field_results_file() -> None:
    """``python -m bench --profile field --markdown --page docs/performance.md`` wrote them."""
    from bench.fieldreport import render as render_field
    from bench.fieldrun import RESULTS
    from bench.fieldrun import tables_in as field_tables_in

    shown = field_tables_in(PAGE.read_text())
    assert shown is not None, f"{PAGE}: no field block"
    assert shown == render_field(json.loads(RESULTS.read_text()))
