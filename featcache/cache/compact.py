"""``featcache compact``: rewrite a cache's live vectors into few full shards and delete the rest.

Updates leave garbage behind: rows of removed images stay in their shards, and every run adds
small shards of one batch each. Compacting copies each distinct live vector once, in row order,
into shards of up to ``COPY_ROWS`` rows, writes a new entry file, and only then deletes the old
shards; a kill at any moment leaves either the old cache or the new one, and at worst unused
shards that the next ``extract`` or ``compact`` deletes. A cache of an older format (1 or 2) is upgraded on the way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from featcache.cache.layout import Views, read_cache, read_views, views_folder, write_cache
from featcache.cache.lock import CacheLock
from featcache.cache.shards import (
    ShardWriter,
    VectorPool,
    check_shards,
    check_views,
    list_shards,
    remove_unreferenced,
    shards_dir,
    sweep_temporaries,
    view_key,
)
from featcache.errors import CacheError


@dataclass
class CompactResult:
    """What ``compact`` did: rows kept, shards and bytes before and after."""

    cache: Path
    rows: int
    vectors: int
    shards_before: int
    shards_after: int
    bytes_before: int
    bytes_after: int
    seconds: float

    def summary(self) -> str:
        mb = 1 << 20
        return (
            f"{self.cache}: {self.rows} rows ({self.vectors} distinct vectors) now in {self.shards_after} shard(s), "
            f"{self.bytes_after / mb:.1f} MB (was {self.shards_before} shard(s), {self.bytes_before / mb:.1f} MB); "
            f"{self.seconds:.1f} s"
        )


def compact(cache_path: str | Path) -> CompactResult:
    """Rewrite the shards of the cache at ``cache_path`` to hold each live vector once."""
    start, path = time.perf_counter(), Path(cache_path)
    with CacheLock(path):
        sweep_temporaries(path)
        folder = shards_dir(path)
        before = _usage(folder)
        cache = read_cache(path, with_vectors=False)
        views = read_views(path)
        problems = check_shards(cache) + check_views(path, views)
        if problems:
            raise CacheError(
                f"{path} has {len(problems)} damaged shard(s), first {problems[0].file}: {problems[0].reason}; "
                f"run featcache extract to compute their rows again, then compact"
            )
        pool = VectorPool()
        try:
            pool.add_cache(path, cache)
            distinct = list(dict.fromkeys(cache.rows.sha256))
            pool.copy_into(distinct, ShardWriter(folder, cache.fingerprint))
            locations = pool.locations(cache.rows.sha256)
            views = _compact_views(path, views, cache.rows.sha256)
            write_cache(path, cache.attrs, cache.class_names, cache.rows, locations, cache.quarantine, views)
        finally:
            pool.close()
        remove_unreferenced(folder, locations.files)
        remove_unreferenced(views_folder(path), views.locations.files if views is not None else [])
        after = _usage(folder)
    seconds = time.perf_counter() - start
    return CompactResult(path, len(cache.rows), len(distinct), before[0], after[0], before[1], after[1], seconds)


def _compact_views(path: Path, views: Views | None, sha256s) -> Views | None:
    """The views of the cache copied, each distinct one once, into few full shards of views."""
    if views is None:
        return None
    pool = VectorPool()
    try:
        pool.add_views(path, views, sha256s)
        keys = [view_key(sha256s[r], v) for r, v in zip(views.row.tolist(), views.view.tolist())]
        pool.copy_into(list(dict.fromkeys(keys)), ShardWriter(views_folder(path), views.fingerprint))
        return Views(views.row, views.view, pool.locations(keys), views.attrs)
    finally:
        pool.close()


def _usage(folder: Path) -> tuple[int, int]:
    shards = list_shards(folder)
    return len(shards), sum(s.stat().st_size for s in shards)
