"""cache/shards.py: shards committed whole under their content hash, the pool that finds each vector, sweeping."""

from __future__ import annotations

import numpy as np

from featcache.cache.layout import read_cache
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
