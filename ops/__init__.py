"""Coordinator-side operations: embedded Redis, tmux sessions, launch, stop, status.

Each is callable from Python; ``fabfile.py`` is a thin shell over :mod:`ops.commands`.
"""
