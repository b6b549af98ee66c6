"""The tests' tmux helpers live in ``bench.tmuxserver``: the benchmarks need them too, and the
benchmarks never import the tests (they run with the coordinator extra alone, without pytest)."""

from bench.tmuxserver import alive, end_server, pane_pids, process_tree, socket_path

__all__ = ["alive", "end_server", "pane_pids", "process_tree", "socket_path"]
