"""Coordinator-side operations: embedded Redis, tmux sessions, launch, stop, status, deploy, doctor.

Each is callable from Python through :mod:`ops.api`; ``fabfile.py`` is a thin shell over
:mod:`ops.commands`, which prints what :mod:`ops.api` returns.
"""
