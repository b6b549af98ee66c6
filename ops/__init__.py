"""Coordinator-side operations: embedded Redis, tmux sessions, launch, stop, status, deploy, doctor.

Each is callable from Python through :mod:`ops.api`; the ``fab`` commands (:mod:`ops.fab`) are
made from the table in :mod:`ops.commands`, which shows what :mod:`ops.api` returns.
"""
