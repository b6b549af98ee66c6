"""The tests' LAN of network namespaces lives in ``bench.lan``: the benchmarks need it too, and
the benchmarks never import the tests (they run with the coordinator extra alone, without
pytest)."""

from bench.lan import Lan, LanHost, NetnsUnavailable

__all__ = ["Lan", "LanHost", "NetnsUnavailable"]
