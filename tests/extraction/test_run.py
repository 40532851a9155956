"""extractor.py: what lands in the cache, incremental reruns, resume, quarantine and refusals."""

from __future__ import annotations

import os
import shutil
import time

import h5py
import numpy as np
import pytest

from featcache.api import extract
from featcache.cache.layout import read_cache
from featcache.cache.lock import CacheLock
from featcache.cache.shards import list_shards, shards_dir
from featcache.errors import BadImagesError, FingerprintMismatch, LockedError
from featcache.extraction import run as run_module
from featcache.extraction.run import _known_rows
from featcache.images import PreprocessSpec, load_image
from tests.support import FakeBackbone, fake_embed, make_split_dataset, shards_in_use, write_image


def _run(data, out, backbone=None, **options):
    options.setdefault("image_size", 71)
    options.setdefault("batch_size", 4)
    return extract(data, out, backbone=backbone or FakeBackbone(), **options)


def test_cache_holds_vectors_labels_splits_paths_and_hashes(split_data, tmp_path):
    out = tmp_path / "c.h5"
    result = _run(split_data, out)
    assert (result.rows, result.computed, result.reused, result.quarantine) == (20, 20, 0, [])
    assert result.per_split == {"train": 12, "validation": 4, "test": 4}
    cache = read_cache(out)
    assert cache.class_names == ["cat", "dog"]
    assert cache.features.shape == (20, 16) and cache.features.dtype == np.float32
    i = cache.rows.path.index("validation/dog/dog_001.jpg")
    assert (cache.rows.split[i], cache.class_names[cache.rows.label[i]]) == ("validation", "dog")
    expected = fake_embed(load_image(split_data / cache.rows.path[i], PreprocessSpec(image_size=71))[None])[0]
    np.testing.assert_allclose(cache.features[i], expected, rtol=1e-6)
    assert shards_in_use(out)


def test_cache_is_plain_hdf5_with_provenance(split_data, tmp_path):
    out = tmp_path / "c.h5"
    _run(split_data, out)
    with h5py.File(out, "r") as h5:
        assert set(h5) >= {"features", "label", "split", "path", "sha256", "class_names", "quarantine"}
        attrs = dict(h5.attrs)
        assert h5["split"][0].decode() in ("train", "validation", "test")
    for key in (
        "fingerprint",
        "backbone",
        "weights_id",
        "image_size",
        "interpolation",
        "preprocessing",
        "dtype",
        "tensorflow_version",
        "keras_version",
        "featcache_version",
        "created_at",
    ):
        assert key in attrs, key
    assert attrs["image_size"] == 71 and attrs["interpolation"] == "nearest"


def test_rerun_computes_nothing_and_never_builds_the_model(split_data, tmp_path):
    out = tmp_path / "c.h5"
    _run(split_data, out)
    before, written = read_cache(out), out.stat()
    backbone = FakeBackbone()
    result = _run(split_data, out, backbone)
    assert (result.computed, result.reused, backbone.built) == (0, 20, 0)
    after = read_cache(out)
    assert after.rows == before.rows and np.array_equal(after.features, before.features)
    assert after.attrs["created_at"] == before.attrs["created_at"]
    # nothing changed, so the entry file was not written again
    assert (out.stat().st_ino, out.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert after.attrs["updated_at"] == before.attrs["updated_at"]
    _run(split_data, out, FakeBackbone(), val_fraction=0.3)  # any change is written, here an attribute
    assert read_cache(out).attrs["val_fraction"] == 0.3 and out.stat().st_ino != written.st_ino


def test_touched_but_unchanged_files_are_rehashed_not_recomputed(split_data, tmp_path):
    out = tmp_path / "c.h5"
    _run(split_data, out)
    before = read_cache(out)
    for path in split_data.rglob("*.jpg"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    backbone = FakeBackbone()
    result = _run(split_data, out, backbone)
    assert (result.computed, result.reused, backbone.built) == (0, 20, 0)
    after = read_cache(out)
    assert after.rows.sha256 == before.rows.sha256 and np.array_equal(after.features, before.features)
    assert after.rows.mtime_ns != before.rows.mtime_ns  # recorded again, so the next run reads nothing


def test_new_removed_and_renamed_files(split_data, tmp_path):
    out = tmp_path / "c.h5"
    _run(split_data, out)
    old = read_cache(out)
    write_image(split_data / "train" / "cat" / "new.jpg", (250, 10, 10), 99)
    (split_data / "train" / "dog" / "dog_000.jpg").unlink()
    shutil.move(split_data / "test" / "cat" / "cat_000.jpg", split_data / "test" / "cat" / "renamed.jpg")
    result = _run(split_data, out)
    assert (result.rows, result.computed) == (20, 1)
    new = read_cache(out)
    assert "train/dog/dog_000.jpg" not in new.rows.path
    moved = old.features[old.rows.path.index("test/cat/cat_000.jpg")]
    assert np.array_equal(new.features[new.rows.path.index("test/cat/renamed.jpg")], moved)
    fresh = read_cache(_run(split_data, tmp_path / "fresh.h5").output)  # every row as a new cache has it
    assert new.rows == fresh.rows and np.array_equal(new.features, fresh.features)


def test_a_path_is_known_by_its_first_cache_row_at_each_of_its_listings():
    stored = np.array([b"x", b"yy", b"x", b"a"])  # a cache holding x twice
    listed = np.array([b"x", b"yy", b"x", b"z", b"xx", b""])  # a manifest listing x twice
    assert _known_rows(listed, stored).tolist() == [0, 1, 0, -1, -1, -1]


def test_identical_files_are_computed_once_and_kept_as_two_rows(split_data, tmp_path):
    shutil.copy(split_data / "train" / "cat" / "cat_000.jpg", split_data / "test" / "cat" / "copy.jpg")
    result = _run(split_data, tmp_path / "c.h5")
    assert (result.rows, result.computed) == (21, 20)


def test_other_settings_are_refused_unless_overwrite(split_data, tmp_path):
    out = tmp_path / "c.h5"
    _run(split_data, out)
    with pytest.raises(FingerprintMismatch, match=r"image_size: 71 -> 96.*--overwrite"):
        _run(split_data, out, image_size=96)
    with pytest.raises(FingerprintMismatch, match="interpolation"):
        _run(split_data, out, interpolation="bilinear")
    with pytest.raises(FingerprintMismatch, match="backbone"):
        _run(split_data, out, FakeBackbone("other"))
    result = _run(split_data, out, image_size=96, overwrite=True)
    assert result.computed == 20 and read_cache(out).attrs["image_size"] == 96


def _bad_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    good = write_image(folder / "big.jpg", (10, 200, 10), 5, size=120)
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:600])
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "text.png").write_text("not a picture")
    (folder / "notes.txt").write_text("ignored")


def test_bad_files_are_quarantined_with_reasons_and_good_ones_kept(split_data, tmp_path):
    _bad_files(split_data / "train" / "dog")
    out = tmp_path / "c.h5"
    result = _run(split_data, out)
    reasons = {q.path.split("/")[-1]: q.reason for q in result.quarantine}
    assert set(reasons) == {"zero.jpg", "truncated.jpg", "random.jpg", "text.png"}
    assert reasons["zero.jpg"].startswith("empty file")
    assert reasons["truncated.jpg"].startswith("truncated image")
    assert reasons["random.jpg"].startswith("not an image") and reasons["text.png"].startswith("not an image")
    assert result.rows == 21  # 20 + big.jpg
    cache = read_cache(out)
    assert {q.path for q in cache.quarantine} == {f"train/dog/{n}" for n in reasons}
    rerun = _run(split_data, out)
    assert (rerun.computed, len(rerun.quarantine)) == (0, 4)


def test_strict_makes_bad_files_an_error_and_keeps_the_old_cache(split_data, tmp_path):
    out = tmp_path / "c.h5"
    _run(split_data, out)
    _bad_files(split_data / "test" / "cat")
    with pytest.raises(BadImagesError, match="could not be used"):
        _run(split_data, out, strict=True)
    assert len(read_cache(out).rows) == 20


class _Crashing(FakeBackbone):
    """Fails after ``after`` batches, like a process killed mid-run."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def build(self):
        calls = {"n": 0}

        def embed(batch):
            calls["n"] += 1
            if calls["n"] > self.after:
                raise KeyboardInterrupt
            return fake_embed(batch)

        return embed


@pytest.mark.parametrize("commit_seconds, shards", [(0, 2), (10, 1)], ids=["every-batch", "pending-on-ctrl-c"])
def test_interrupted_run_keeps_committed_parts_and_resumes(split_data, tmp_path, commit_seconds, shards):
    """Each batch committed as it comes, or (within the commit interval) both batches committed as one shard
    when the run is interrupted: either way their 8 vectors are kept."""
    out, reference = tmp_path / "c.h5", tmp_path / "ref.h5"
    _run(split_data, reference)
    with pytest.raises(KeyboardInterrupt):
        _run(split_data, out, _Crashing(after=2), commit_seconds=commit_seconds)
    assert len(list_shards(shards_dir(out))) == shards and not out.exists()
    result = _run(split_data, out)
    assert (result.computed, result.reused) == (12, 8)
    a, b = read_cache(out), read_cache(reference)
    assert a.rows.path == b.rows.path and np.array_equal(a.features, b.features)


def test_temporaries_of_a_killed_run_are_swept_by_the_next_run(split_data, tmp_path):
    out = tmp_path / "c.h5"
    with pytest.raises(KeyboardInterrupt):
        _run(split_data, out, _Crashing(after=2))
    shards = shards_dir(out)
    # what SIGKILL leaves: a half-written cache file beside the cache and a half-written shard
    orphans = [tmp_path / ".c.h5.tmp-999999", shards / ".shard-999999-000003.h5.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"\x89HDF\r\n" + os.urandom(4096))
    unrelated = tmp_path / ".other.h5.tmp-999999"
    unrelated.write_bytes(b"not ours")
    result = _run(split_data, out)
    assert (result.computed, result.reused) == (12, 8)
    assert not any(o.exists() for o in orphans) and shards_in_use(out)
    assert unrelated.exists()  # another cache's temporaries are not ours to delete


def test_second_writer_is_refused_at_once(split_data, tmp_path):
    out = tmp_path / "c.h5"
    with CacheLock(out):
        with pytest.raises(LockedError, match="is being written by featcache process"):
            _run(split_data, out)
    _run(split_data, out)


def test_class_folder_splits_do_not_depend_on_file_names(tmp_path):
    data = tmp_path / "d"
    for label in ("cat", "dog"):
        for i in range(15):
            write_image(data / label / f"{i}.jpg", (i * 10, 50, 100 if label == "cat" else 200), i)
    first = read_cache(_run(data, tmp_path / "a.h5", val_fraction=0.2, test_fraction=0.2).output)
    for path in sorted((data / "cat").iterdir()):
        path.rename(path.with_name("z" + path.name))
    second = read_cache(_run(data, tmp_path / "b.h5", val_fraction=0.2, test_fraction=0.2).output)
    by_hash = dict(zip(first.rows.sha256, first.rows.split))
    assert {s for s in first.rows.split} == {"train", "validation", "test"}
    assert all(by_hash[h] == s for h, s in zip(second.rows.sha256, second.rows.split))


def test_manifest_gives_labels_and_splits(tmp_path):
    data = make_split_dataset(tmp_path / "d", counts={"train": 3})
    manifest = tmp_path / "m.csv"
    rows = [
        f"train/{c}/{c}_{i:03d}.{'png' if i == 2 else 'jpg'},{c},{'train' if i else 'test'}"
        for c in ("cat", "dog")
        for i in range(3)
    ]
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    result = _run(data, tmp_path / "m.h5", manifest=manifest)
    assert result.per_split == {"train": 4, "validation": 0, "test": 2}


def test_a_reordered_manifest_updates_to_what_a_fresh_extract_makes(tmp_path):
    data = make_split_dataset(tmp_path / "d", counts={"train": 3})
    files = [f"train/{c}/{c}_{i:03d}.{'png' if i == 2 else 'jpg'}" for c in ("cat", "dog") for i in range(3)]
    manifest, out = tmp_path / "m.csv", tmp_path / "m.h5"
    manifest.write_text("path,label\n" + "".join(f"{f},{f.split('/')[1]}\n" for f in files))
    _run(data, out, manifest=manifest)
    write_image(data / "train" / "dog" / "new.jpg", (250, 10, 10), 99)
    listed = [*reversed(files), "train/dog/new.jpg", files[0]]  # splits by content hash; one new, one twice
    manifest.write_text("path,label\n" + "".join(f"{f},{f.split('/')[1]}\n" for f in listed))
    assert _run(data, out, manifest=manifest).computed == 1
    fresh = read_cache(_run(data, tmp_path / "fresh.h5", manifest=manifest).output)
    updated = read_cache(out)
    assert updated.rows == fresh.rows and np.array_equal(updated.features, fresh.features)
    assert len(updated.rows) == 8 and updated.rows.path.count(files[0]) == 2


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
def test_decoding_threads_yield_to_the_model_until_they_are_starved():
    from concurrent.futures import ThreadPoolExecutor

    from featcache.extraction.priority import DecodePriority

    def policy_and_nice():
        return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)

    priority = DecodePriority(patience=0.05)
    with ThreadPoolExecutor(1, initializer=priority.lower) as pool:
        assert priority.wait(pool.submit(policy_and_nice)) == (os.SCHED_IDLE, 10)
        assert not priority.raised
        slow = pool.submit(time.sleep, 0.5)  # the main thread waits longer than its patience
        priority.wait(slow)
        assert priority.raised
        assert priority.wait(pool.submit(policy_and_nice)) == (os.SCHED_OTHER, 10)


def test_assume_unchanged_reads_only_new_paths_and_trusts_known_ones(split_data, tmp_path):
    out = tmp_path / "c.h5"
    _run(split_data, out)
    old = read_cache(out)
    edited = split_data / "train" / "cat" / "cat_000.jpg"
    write_image(edited, (10, 250, 10), 77)  # same path, other pixels
    write_image(split_data / "train" / "dog" / "new.jpg", (250, 10, 10), 99)
    (split_data / "test" / "dog" / "dog_000.jpg").unlink()
    result = _run(split_data, out, assume_unchanged=True)
    assert (result.rows, result.computed, result.reused) == (20, 1, 19)
    trusted = read_cache(out)
    assert "test/dog/dog_000.jpg" not in trusted.rows.path and "train/dog/new.jpg" in trusted.rows.path
    i, j = trusted.rows.path.index("train/cat/cat_000.jpg"), old.rows.path.index("train/cat/cat_000.jpg")
    assert trusted.rows.sha256[i] == old.rows.sha256[j]  # taken as unchanged: its old vector is kept
    assert np.array_equal(trusted.features[i], old.features[j])
    result = _run(split_data, out)  # without the option the edit is noticed
    assert (result.computed, result.reused) == (1, 19)
    checked = read_cache(out)
    expected = fake_embed(load_image(edited, PreprocessSpec(image_size=71))[None])[0]
    np.testing.assert_allclose(checked.features[checked.rows.path.index("train/cat/cat_000.jpg")], expected, rtol=1e-6)


def test_assume_unchanged_without_a_cache_reads_everything(split_data, tmp_path):
    result = _run(split_data, tmp_path / "c.h5", assume_unchanged=True)
    assert (result.rows, result.computed) == (20, 20)
    cache = read_cache(tmp_path / "c.h5")
    stat = (split_data / cache.rows.path[0]).stat()
    assert (cache.rows.size[0], cache.rows.mtime_ns[0]) == (stat.st_size, stat.st_mtime_ns)


def test_a_file_removed_between_listing_and_stat_is_quarantined(split_data, tmp_path, monkeypatch):
    from featcache.extraction import dataset

    gone, real_stat = split_data / "train" / "cat" / "cat_001.jpg", dataset.stat_files

    def remove_then_stat(*args):
        gone.unlink(missing_ok=True)  # listed, not yet stat-ed
        return real_stat(*args)

    monkeypatch.setattr(run_module, "stat_files", remove_then_stat)
    result = _run(split_data, tmp_path / "c.h5")
    assert [(q.path, q.reason) for q in result.quarantine] == [
        ("train/cat/cat_001.jpg", "cannot read file: No such file or directory")
    ]
    assert (result.rows, result.computed) == (19, 19)
    assert "train/cat/cat_001.jpg" not in read_cache(tmp_path / "c.h5").rows.path


def test_a_new_path_whose_content_the_cache_holds_reuses_its_vector(split_data, tmp_path):
    out = tmp_path / "c.h5"
    _run(split_data, out)
    result = _run(split_data, out)
    assert (result.computed, result.reused) == (0, 20)
    shutil.copy(split_data / "train" / "cat" / "cat_000.jpg", split_data / "train" / "cat" / "copy.jpg")
    result = _run(split_data, out)  # found by its content hash, not computed
    assert (result.computed, result.reused, result.rows) == (0, 21, 21)
    with h5py.File(out) as h5:
        at = [p.decode() for p in h5["path"][:]].index("train/cat/copy.jpg")
        original = [p.decode() for p in h5["path"][:]].index("train/cat/cat_000.jpg")
        assert h5["sha256"][at] == h5["sha256"][original]
        np.testing.assert_array_equal(h5["features"][at], h5["features"][original])
