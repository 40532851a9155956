"""cache/parts.py: parts committed whole, the pool that finds each vector, sweeping what killed runs left."""

from __future__ import annotations

import numpy as np

from featcache.cache.parts import (
    PartWriter,
    VectorPool,
    drop_other_parts,
    list_parts,
    parts_dir,
    remove_parts,
    sweep_temporaries,
)
from tests.support import handmade_cache


def test_parts_are_committed_whole_and_found_by_content_hash(tmp_path):
    folder = parts_dir(tmp_path / "c.h5")
    writer = PartWriter(folder, "fp")
    writer.write(["a", "b"], np.array([[1, 2], [3, 4]], np.float32), bad=[("z", "truncated image")])
    writer.write(["c"], np.array([[5, 6]], np.float32))
    assert len(list_parts(folder)) == 2 and writer.rows_written == 3
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    pool = VectorPool()
    assert pool.add_parts(folder, "fp") == 2
    np.testing.assert_array_equal(pool.gather(["c", "a", "a"]), [[5, 6], [1, 2], [1, 2]])
    assert "b" in pool and "z" not in pool and pool.quarantine == {"z": "truncated image"}
    pool.close()


def test_pool_reads_a_cache_file_and_parts_of_its_fingerprint_only(tmp_path):
    cache = handmade_cache(tmp_path / "c.h5", [0, 1], ["train", "train"], ["a", "b"], dim=2)
    folder = parts_dir(cache)
    PartWriter(folder, "fp").write(["new"], np.ones((1, 2), np.float32))
    PartWriter(folder, "other").write(["alien"], np.ones((1, 2), np.float32))
    (folder / "part-0-0-000001.h5").write_bytes(b"garbage")
    pool = VectorPool()
    pool.add_cache(cache)
    assert pool.add_parts(folder, "fp") == 1  # the other fingerprint's part is not used ...
    assert "new" in pool and "alien" not in pool and len(pool) == 3
    assert not (folder / "part-0-0-000001.h5").exists()  # ... and an unreadable one is deleted
    drop_other_parts(folder, "fp")
    assert len(list_parts(folder)) == 1
    remove_parts(folder)
    assert not folder.exists()
    pool.close()


def test_sweep_deletes_only_this_caches_temporaries(tmp_path):
    cache = tmp_path / "c.h5"
    folder = parts_dir(cache)
    PartWriter(folder, "fp").write(["a"], np.ones((1, 2), np.float32))
    litter = [tmp_path / ".c.h5.tmp-4242", folder / ".part-1-4242-000001.h5.tmp"]
    keep = [tmp_path / ".d.h5.tmp-4242", tmp_path / "c.h5.tmp-notours"]
    for path in litter + keep:
        path.write_bytes(b"x")
    assert sorted(sweep_temporaries(cache)) == sorted(litter)
    assert all(p.exists() for p in keep) and len(list_parts(folder)) == 1
