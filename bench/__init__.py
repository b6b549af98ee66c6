"""CatDog's benchmarks: ``python -m bench`` (``--quick`` for a short run). Results go to
``bench/results.json`` and a table on stdout; nothing here is asserted by the tests."""
