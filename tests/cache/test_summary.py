"""featcache info's summary of a cache, made without reading its vectors."""

from __future__ import annotations

from featcache.cache.summary import info
from tests.support import feature_reads, interleaved_cache


def test_info_counts_rows_without_reading_a_vector(tmp_path, monkeypatch):
    cache = interleaved_cache(tmp_path / "c.h5", n=120)
    reads = feature_reads(monkeypatch)
    summary = info(cache)
    assert summary.rows == 120 and sum(summary.per_split.values()) == 120
    assert reads == []
