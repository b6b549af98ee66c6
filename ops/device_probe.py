"""What a device's Python can do, found out on the device itself (``fab doctor`` and ``fab deploy``).

This file is sent as ``python -c <source> ENV_FILE`` and prints one JSON object. It is
standard library only and keeps to Python 3.6 syntax, so that an old Python still reports its
version rather than a syntax error. ``ENV_FILE`` (mode 600, or ``-``) holds ``CATDOG_BROKER_URL``: the
broker's password never appears on a command line.
"""

import json
import os
import socket
import sys

DEPLOYED_RECORD = "catdog-deployed.json"  # in the environment's prefix, written by fab deploy
REQUIRED = ("catdog", "catdog.tasks", "workers", "celery", "redis", "yaml")


def read_env(path):
    values: dict = {}
    if path == "-":
        return values
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.rstrip("\n").partition("=")
                if sep:
                    values[key] = value
    except OSError:
        pass
    return values


def check_imports(report):
    try:
        for name in REQUIRED:
            __import__(name)
        import catdog

        report["catdog"] = catdog.__version__
    except Exception as exc:  # any failure to import is what the check reports
        report["import_error"] = f"{type(exc).__name__}: {exc}"


def check_broker(report, url):
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    report["broker_at"] = f"{parts.hostname}:{parts.port or 6379}"
    try:
        if "catdog" in report:
            import redis

            client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
            client.ping()
        else:  # without the Redis client, at least the port
            socket.create_connection((parts.hostname, parts.port or 6379), timeout=3).close()
        report["broker"] = "ok"
    except Exception as exc:
        report["broker_error"] = f"{type(exc).__name__}: {exc}"


def read_deployed(report):
    """The record ``fab deploy`` left in this environment (which CatDog sources it installed)."""
    try:
        with open(os.path.join(sys.prefix, DEPLOYED_RECORD)) as f:
            report["deployed"] = json.load(f)
    except (OSError, ValueError):
        pass


def main(argv):
    env_file = argv[1] if len(argv) > 1 else "-"
    report = {"python": list(sys.version_info[:3]), "executable": sys.executable,
              "prefix": sys.prefix, "in_venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix)}
    check_imports(report)
    url = read_env(env_file).get("CATDOG_BROKER_URL")
    if url:
        check_broker(report, url)
    read_deployed(report)
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main(sys.argv)
