"""cache/shards.py: shards committed whole under their content hash, the pool that finds each vector, sweeping."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.cache import shards
from featcache.cache.layout import Locations, read_cache
from featcache.cache.shards import (
    ShardWriter,
    VectorPool,
    check_shards,
    drop_other_shards,
    list_shards,
    remove_unreferenced,
    shards_dir,
    sweep_temporaries,
)
from tests.support import handmade_cache


def test_shards_are_committed_whole_under_the_hash_of_their_bytes(tmp_path):
    folder = shards_dir(tmp_path / "c.h5")
    writer = ShardWriter(folder, "fp")
    first = writer.write(["a", "b"], np.array([[1, 2], [3, 4]], np.float32), bad=[("z", "truncated image")])
    writer.write(["c"], np.array([[5, 6]], np.float32))
    again = writer.write(["a", "b"], np.array([[1, 2], [3, 4]], np.float32), bad=[("z", "truncated image")])
    assert again == first and len(list_shards(folder)) == 2 and writer.rows_written == 5
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    pool = VectorPool()
    assert pool.add_shards(folder, "fp") == 2
    np.testing.assert_array_equal(pool.gather(["c", "a", "a"]), [[5, 6], [1, 2], [1, 2]])
    assert "b" in pool and "z" not in pool and pool.quarantine == {"z": "truncated image"}
    pool.close()


def test_pool_reads_an_entry_file_and_unfinished_shards_of_its_fingerprint_only(tmp_path):
    cache = handmade_cache(tmp_path / "c.h5", [0, 1], ["train", "train"], ["a", "b"], dim=2)
    folder = shards_dir(cache)
    ShardWriter(folder, "handmade").write(["new"], np.ones((1, 2), np.float32))
    ShardWriter(folder, "other").write(["alien"], np.ones((1, 2), np.float32))
    (folder / "0123.h5").write_bytes(b"garbage")
    pool = VectorPool()
    pool.add_cache(cache)
    assert pool.add_shards(folder, "handmade") == 1  # the other fingerprint's shard is not used ...
    assert "new" in pool and "alien" not in pool and len(pool) == 3
    assert not (folder / "0123.h5").exists()  # ... and an unreadable one is deleted
    drop_other_shards(folder, "handmade")
    used = read_cache(cache, with_vectors=False).locations.files
    assert remove_unreferenced(folder, used) == 1 and [s.name for s in list_shards(folder)] == used
    pool.close()


def test_a_missing_or_truncated_shard_is_found_with_the_rows_it_holds_up(tmp_path):
    cache = handmade_cache(tmp_path / "c.h5", [0, 1, 0], ["train"] * 3, ["a", "b"], dim=2)
    assert check_shards(read_cache(cache, with_vectors=False)) == []
    shard = list_shards(shards_dir(cache))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    (problem,) = check_shards(read_cache(cache, with_vectors=False))
    assert problem.file == shard.name and problem.rows == 3 and "committed" in problem.reason
    pool = VectorPool()
    pool.add_cache(cache)
    assert len(pool) == 0  # its rows are not reused: extract computes them again
    shard.unlink()
    assert check_shards(read_cache(cache, with_vectors=False))[0].reason == "missing"


def test_sweep_deletes_only_this_caches_temporaries(tmp_path):
    cache = tmp_path / "c.h5"
    folder = shards_dir(cache)
    ShardWriter(folder, "fp").write(["a"], np.ones((1, 2), np.float32))
    litter = [tmp_path / ".c.h5.tmp-4242", folder / ".shard-4242-000001.h5.tmp"]
    keep = [tmp_path / ".d.h5.tmp-4242", tmp_path / "c.h5.tmp-notours"]
    for path in litter + keep:
        path.write_bytes(b"x")
    assert sorted(sweep_temporaries(cache)) == sorted(litter)
    assert all(p.exists() for p in keep) and len(list_shards(folder)) == 1


@pytest.mark.parametrize("join_rows", [1 << 16, 4])
def test_joined_locations_put_reused_rows_where_they_were_and_list_only_used_shards(monkeypatch, join_rows):
    monkeypatch.setattr(shards, "JOIN_ROWS", join_rows)  # 4: the 6 rows made 4, then 2
    known = Locations(["a.h5", "b.h5", "c.h5"], [2, 3, 1], [20, 30, 10], np.array([0, 0, 1, 1, 1, 2]),
                      np.array([0, 1, 0, 1, 2, 0]), 4)  # fmt: skip
    found = Locations(["d.h5", "b.h5"], [2, 3], [40, 30], np.array([0, 1, 0]), np.array([1, 2, 0]), 4)
    reused = np.array([3, -1, 0, -1, -1, 4])  # rows 1, 3, 4 are the found ones, in order
    joined = shards.joined_locations(known, reused, found, np.flatnonzero(reused < 0))
    where = [(joined.files[i], int(r)) for i, r in zip(joined.index.tolist(), joined.row)]
    assert where == [("b.h5", 1), ("d.h5", 1), ("a.h5", 0), ("b.h5", 2), ("d.h5", 0), ("b.h5", 2)]
    assert joined.files == ["a.h5", "b.h5", "d.h5"]  # c.h5 no longer used
    assert (joined.file_rows, joined.file_bytes, joined.dim) == ([2, 3, 2], [20, 30, 40], 4)
    assert joined.index.dtype == np.int32 and joined.row.dtype == np.int64
