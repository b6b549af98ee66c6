"""What a worker reports of itself, read from /proc: its children and process tree (the pool),
by the kernel's own child lists and by the pass over every process they replace."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from workers import usage

#: a process with one child, which has one child of its own: prints both ids
NESTED = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import subprocess, time; "
                          "p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); "
                          "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
time.sleep(60)
"""


@pytest.fixture
def nested() -> Iterator[tuple[int, int, int]]:
    top = subprocess.Popen([sys.executable, "-c", NESTED], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    child, grandchild = map(int, top.stdout.readline().split())  # type: ignore[union-attr]
    yield top.pid, child, grandchild
    os.killpg(top.pid, 9)
    top.wait()


@pytest.fixture(params=["kernel lists", "pass over /proc"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pass over /proc":
        monkeypatch.setattr(usage, "_kernel_lists_children", lambda: False)
    elif not usage._kernel_lists_children():
        pytest.fail("this kernel keeps no /proc/<pid>/task/<tid>/children: the fast path is untested")
    return str(request.param)


def test_children_and_tree_of_a_nested_process(nested: tuple[int, int, int], way: str) -> None:
    top, child, grandchild = nested
    assert usage.children(top) == [child]
    assert usage.children(child) == [grandchild]
    assert sorted(usage.tree(top)) == sorted([top, child, grandchild])
    gone = max(int(p) for p in os.listdir("/proc") if p.isdigit()) + 10_000
    assert usage.children(gone) == [] and usage.tree(gone) == [gone]


def test_tree_rss_counts_the_children(nested: tuple[int, int, int]) -> None:
    top, child, _ = nested
    alone, with_child = usage._rss_kb(top) / 1024, usage.tree_rss_mb(top)
    assert with_child is not None and with_child >= alone + usage._rss_kb(child) / 1024 - 0.1


def test_the_heartbeat_reads_a_few_files_not_all_of_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a timing goal: with the kernel's lists, what the heartbeat reads does not grow with
    the number of processes the device runs."""
    if not usage._kernel_lists_children():
        pytest.fail("this kernel keeps no /proc/<pid>/task/<tid>/children")
    opened: list[str] = []
    real_open = open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    usage.tree_rss_mb()
    monkeypatch.undo()
    threads = len(os.listdir(f"/proc/{os.getpid()}/task"))
    assert len(opened) <= 1 + threads + len(usage.children(os.getpid())), opened
