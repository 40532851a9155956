"""cache/compact.py and the upgrade: live vectors rewritten once, garbage reclaimed, format 1 read and upgraded."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from featcache.api import compact, extract, info, verify
from featcache.cache.layout import FORMAT_VERSION, read_cache
from featcache.cache.shards import list_shards, shards_dir
from featcache.cli import main
from featcache.errors import CacheError
from tests.support import FakeBackbone, kill_at, make_split_dataset, shards_in_use

FORMAT1 = Path(__file__).resolve().parents[1] / "data" / "format1"


def _format1_copy(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """The images and the format-1 cache that the previous release made of them (tests/data/format1)."""
    shutil.copytree(FORMAT1, tmp_path / "old")
    cache = tmp_path / "old" / "cache.h5"
    with h5py.File(cache) as h5:
        assert h5.attrs["format_version"] == 1 and not h5["features"].is_virtual
        vectors = {sha: row for sha, row in zip(h5["sha256"].asstr()[:], h5["features"][:])}
    return tmp_path / "old" / "images", cache, vectors


def _vectors_by_hash(cache: Path) -> dict:
    got = read_cache(cache)
    return dict(zip(got.rows.sha256, got.features))


def test_a_format1_cache_is_upgraded_by_the_next_extract_without_recomputing(tmp_path):
    images, cache, before = _format1_copy(tmp_path)
    result = extract(images, cache, backbone=FakeBackbone(), image_size=71)
    assert (result.rows, result.computed, result.reused) == (10, 0, 10)
    with h5py.File(cache) as h5:
        assert h5.attrs["format_version"] == FORMAT_VERSION and h5["features"].is_virtual
    after = _vectors_by_hash(cache)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
    assert shards_in_use(cache) and len(list_shards(shards_dir(cache))) == 1


def test_a_cache_of_the_current_format_made_by_an_earlier_release_is_reused_whole(tmp_path):
    """tests/data/format3: the images and the format-3 cache a release made of them, its shards beside it.
    A later release reads it, updates it without computing a vector and keeps every vector."""
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "format3", tmp_path / "old")
    images, cache = tmp_path / "old" / "images", tmp_path / "old" / "cache.h5"
    with h5py.File(cache) as h5:
        assert h5.attrs["format_version"] == 3 and h5["features"].is_virtual
    before = _vectors_by_hash(cache)
    assert len(before) == 10 and all(np.isfinite(v).all() for v in before.values())
    result = extract(images, cache, backbone=FakeBackbone(), image_size=71)
    assert (result.rows, result.computed, result.reused) == (10, 0, 10)
    after = _vectors_by_hash(cache)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
    assert info(cache).shard_problems == [] and compact(cache).rows == 10


def test_compact_upgrades_a_format1_cache(tmp_path):
    _, cache, before = _format1_copy(tmp_path)
    result = compact(cache)
    assert (result.rows, result.vectors, result.shards_after) == (10, 10, 1)
    after = _vectors_by_hash(cache)
    assert all(np.array_equal(after[k], before[k]) for k in before)
    assert info(cache).attrs["format_version"] == FORMAT_VERSION


def test_compact_reclaims_removed_rows_and_merges_small_shards(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 10})
    cache = tmp_path / "c.h5"
    extract(data, cache, backbone=FakeBackbone(), image_size=71, batch_size=4)
    for victim in sorted((data / "train" / "cat").iterdir())[:6]:
        victim.unlink()
    extract(data, cache, backbone=FakeBackbone(), image_size=71, batch_size=4)
    before = _vectors_by_hash(cache)
    garbage_bytes = sum(s.stat().st_size for s in list_shards(shards_dir(cache)))
    out = CliRunner().invoke(main, ["compact", str(cache)])
    assert out.exit_code == 0, out.output
    assert "14 rows (14 distinct vectors) now in 1 shard(s)" in out.output
    assert _vectors_by_hash(cache).keys() == before.keys()
    assert all(np.array_equal(v, before[k]) for k, v in _vectors_by_hash(cache).items())
    assert sum(s.stat().st_size for s in list_shards(shards_dir(cache))) < garbage_bytes
    again = extract(data, cache, backbone=FakeBackbone(), image_size=71)
    assert again.computed == 0 and shards_in_use(cache)


def test_a_damaged_shard_is_reported_and_recomputed_by_the_next_extract(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 4})
    cache = tmp_path / "c.h5"
    extract(data, cache, backbone=FakeBackbone(), image_size=71, batch_size=4)
    shard = list_shards(shards_dir(cache))[0]
    with h5py.File(shard, "r") as h5:
        held = h5["features"].shape[0]
    shard.write_bytes(shard.read_bytes()[:-64])
    summary = info(cache)
    assert [(p.file, p.rows) for p in summary.shard_problems] == [(shard.name, held)]
    assert f"damaged shard {shard.name}" in summary.summary()
    checked = verify(cache, backbone=FakeBackbone(), sample=8)
    assert not checked.passed and checked.causes[0].startswith("damaged shards:")
    with pytest.raises(CacheError, match="damaged shard"):
        compact(cache)
    result = extract(data, cache, backbone=FakeBackbone(), image_size=71, batch_size=4)
    assert result.computed == held and info(cache).shard_problems == []
    assert not np.isnan(read_cache(cache).features).any()


#: where a compact is killed: (audit event, regex of the path it names) — see tests.support.kill_at
COMPACT_MOMENTS = {
    "shard": ("os.rename", r"\.shards/\.shard-[^/]*\.tmp$"),  # the new shard written, not yet renamed into place
    "entry": ("os.rename", r"/\.c\.h5\.tmp-\d+$"),  # the new entry file written, not yet renamed over the old
    "cleanup": ("os.remove", r"\.shards/[0-9a-f]{32}\.h5$"),  # the new entry in place, no old shard deleted
}


@pytest.mark.parametrize("moment", list(COMPACT_MOMENTS))
def test_compact_killed_at_any_moment_leaves_a_whole_cache_and_finishes_when_rerun(tmp_path, moment):
    data = make_split_dataset(tmp_path / "data", counts={"train": 10})
    cache = tmp_path / "c.h5"
    extract(data, cache, backbone=FakeBackbone(), image_size=71, batch_size=4, commit_seconds=0)
    before, old = read_cache(cache), {s.name for s in list_shards(shards_dir(cache))}
    assert len(old) == 5  # one shard per batch: compact merges them into one and deletes these
    pid = kill_at([sys.executable, "-m", "featcache", "compact", str(cache)], *COMPACT_MOMENTS[moment], timeout=120)
    left = {s.name for s in list_shards(shards_dir(cache))}
    shown = {  # what the files show of the moment the process was killed at
        "shard": bool(list(shards_dir(cache).glob(f".shard-{pid}-*.tmp"))) and left == old,
        "entry": cache.with_name(f".c.h5.tmp-{pid}").exists() and len(left) == 6,
        "cleanup": left > old and not set(read_cache(cache, with_vectors=False).locations.files) & old,
    }
    assert shown[moment], f"killed at {moment}, but the shards are {sorted(left)}"
    during = read_cache(cache)  # whole and readable: the old cache or the new one
    assert during.rows == before.rows and np.array_equal(during.features, before.features)
    compact(cache)
    after = read_cache(cache)
    assert after.rows == before.rows and np.array_equal(after.features, before.features)
    assert shards_in_use(cache) and len(list_shards(shards_dir(cache))) == 1
    assert not [p for p in tmp_path.rglob(".*tmp*")]


def _as_format2(cache: Path) -> None:
    """Rewrite a cache's per-row strings as format 2 stored them: variable-length UTF-8 strings."""
    with h5py.File(cache, "r+") as h5:
        for name in ("path", "sha256", "split"):
            values = h5[name].asstr()[:]
            del h5[name]
            h5.create_dataset(name, data=values.astype(object), dtype=h5py.string_dtype("utf-8"))
        h5.attrs["format_version"] = 2


def test_a_format2_cache_is_read_and_upgraded_by_the_next_extract_without_recomputing(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 6, "validation": 2})
    cache = tmp_path / "c.h5"
    extract(data, cache, backbone=FakeBackbone(), image_size=71)
    before = read_cache(cache)
    _as_format2(cache)
    with h5py.File(cache) as h5:
        assert h5.attrs["format_version"] == 2 and h5py.check_string_dtype(h5["path"].dtype).length is None
    assert info(cache).per_split == {"train": 12, "validation": 4, "test": 0} and read_cache(cache).rows == before.rows
    result = extract(data, cache, backbone=FakeBackbone(), image_size=71)
    assert (result.computed, result.reused) == (0, 16)
    with h5py.File(cache) as h5:
        assert h5.attrs["format_version"] == FORMAT_VERSION == 3
        assert h5py.check_string_dtype(h5["path"].dtype).length == max(len(p.encode()) for p in before.rows.path)
    after = read_cache(cache)
    assert after.rows == before.rows and np.array_equal(after.features, before.features)
