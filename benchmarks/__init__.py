"""featcache's benchmark suite: ``python -m benchmarks.bench`` (or ``make bench``); not part of the tests."""
