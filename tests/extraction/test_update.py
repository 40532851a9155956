"""update.py: an update read a folder at a time alongside the existing cache gives the cache that the
listing held whole gives, and falls back to it where the existing rows are not in the walk's order."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from featcache.api import extract
from featcache.cache.layout import Locations, read_cache, write_cache
from featcache.extraction import run as run_module
from featcache.extraction import update
from tests.support import CLASS_COLOURS, FakeBackbone, make_split_dataset, write_image


def _run(data, out, **options):
    options.setdefault("image_size", 71)
    options.setdefault("batch_size", 4)
    return extract(data, out, backbone=FakeBackbone(), **options)


def _listed(data, out, monkeypatch, **options):
    """The same extract through the listing held whole."""
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_update_walked", lambda *args: None)
        return _run(data, out, **options)


def _walked(data, out, monkeypatch, **options):
    """An extract that must not fall back to the listing held whole."""

    def refused(*args):
        raise AssertionError("the update fell back to the listing")

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_update_listed", refused)
        return _run(data, out, **options)


def _content(out):
    cache = read_cache(out)
    order = np.arange(len(cache.rows))
    return cache.rows, cache.class_names, cache.quarantine, cache.features[order]


def _same(walked, listed, result_walked, result_listed):
    rows_w, names_w, quarantine_w, features_w = _content(walked)
    rows_l, names_l, quarantine_l, features_l = _content(listed)
    assert rows_w == rows_l and names_w == names_l and quarantine_w == quarantine_l
    np.testing.assert_array_equal(features_w, features_l)
    for field in ("rows", "per_split", "per_class", "computed", "reused", "quarantine", "class_names"):
        assert getattr(result_walked, field) == getattr(result_listed, field), field


def _changes(data):
    """Edits of a data folder, one per update: files added (one in a sub-folder, one a copy of a cached
    image, one not an image at all), changed and removed, a class added to train, a folder removed."""
    cat, dog = data / "train" / "cat", data / "train" / "dog"

    def grow():
        write_image(cat / "more" / "deeper" / "cat_900.jpg", CLASS_COLOURS["cat"], 900)
        write_image(dog / "dog_900.png", CLASS_COLOURS["dog"], 901)
        shutil.copy(cat / "cat_000.jpg", dog / "copy_of_cat.jpg")
        (cat / "broken.jpg").write_bytes(b"not an image")

    def change():
        write_image(cat / "cat_001.jpg", CLASS_COLOURS["dog"], 902)
        os.utime(cat / "cat_001.jpg", ns=(1, 1))
        (dog / "dog_003.jpg").unlink()
        write_image(data / "train" / "bird" / "bird_000.jpg", (0, 0, 255), 903)
        write_image(data / "train" / "bird" / "bird_001.jpg", (0, 0, 250), 904)

    def shrink():
        shutil.rmtree(data / "validation" / "dog")
        shutil.rmtree(cat / "more")

    return [lambda: None, grow, change, shrink]


@pytest.mark.parametrize("small_blocks", [False, True])
def test_each_update_gives_the_cache_the_whole_listing_gives(tmp_path, monkeypatch, small_blocks, scan_way):
    if small_blocks:  # pieces and reads cut folders and cross from one to the next
        monkeypatch.setattr(update, "PIECE_ROWS", 3)
        monkeypatch.setattr(update, "READ_ROWS", 2)
    data = make_split_dataset(tmp_path / "data")
    walked, listed = tmp_path / "walked.h5", tmp_path / "listed.h5"
    for step, edit in enumerate(_changes(data)):
        edit()
        options = {"assume_unchanged": True} if step == 3 else {}
        result = _walked(data, walked, monkeypatch, **options)
        _same(walked, listed, result, _listed(data, listed, monkeypatch, **options))
    assert len(read_cache(walked).quarantine) == 1  # the file that is not an image


def test_splits_from_content_hashes_in_class_folders(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for i in range(12):
        write_image(data / ("cat" if i % 2 else "dog") / f"img_{i:02d}.jpg", (40 * (i % 6), 90, 10), i)
    walked, listed = tmp_path / "walked.h5", tmp_path / "listed.h5"
    options = {"val_fraction": 0.3, "test_fraction": 0.3}
    _same(walked, listed, _walked(data, walked, monkeypatch, **options), _listed(data, listed, monkeypatch, **options))
    assert set(read_cache(walked).rows.split) == {"train", "validation", "test"}


def test_a_rerun_with_a_bad_image_writes_nothing(split_data, tmp_path):
    (split_data / "train" / "cat" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "c.h5"
    _run(split_data, out)
    before = out.stat()
    result = _run(split_data, out)
    assert (result.computed, len(result.quarantine), result.rows) == (0, 1, 20)
    after = out.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_rows_out_of_the_walks_order_are_updated_through_the_listing(split_data, tmp_path, monkeypatch):
    out = tmp_path / "c.h5"
    _run(split_data, out)
    cache = read_cache(out)
    back = np.arange(len(cache.rows))[::-1]
    rows = type(cache.rows)(**{name: [column[i] for i in back] for name, column in vars(cache.rows).items()})
    loc = cache.locations
    located = Locations(loc.files, loc.file_rows, loc.file_bytes, loc.index[back], loc.row[back], loc.dim)
    write_cache(out, cache.attrs, cache.class_names, rows, located, cache.quarantine)
    listed, real = [], run_module._update_listed
    monkeypatch.setattr(run_module, "_update_listed", lambda *args: listed.append(1) or real(*args))
    write_image(split_data / "train" / "dog" / "dog_900.jpg", CLASS_COLOURS["dog"], 900)
    result = _run(split_data, out)
    assert listed == [1] and (result.computed, result.reused, result.rows) == (1, 20, 21)
    assert read_cache(out).rows.path == sorted(read_cache(out).rows.path, key=_walk_order)


def _walk_order(path: str):
    split, rest = path.split("/", 1)
    return (["train", "validation", "test"].index(split), rest)


def test_files_that_come_or_go_during_an_update_wait_for_the_next_one(split_data, tmp_path, monkeypatch):
    """The entry file holds the folder as the walk found it: a file made or deleted while the new ones are
    computed is the next update's."""
    out = tmp_path / "c.h5"
    _run(split_data, out)
    late, gone = split_data / "train" / "dog" / "dog_900.jpg", split_data / "test" / "cat" / "cat_000.jpg"
    write_image(split_data / "train" / "dog" / "dog_800.jpg", CLASS_COLOURS["dog"], 800)
    real = run_module._compute

    def compute_then_edit(*args):
        computed = real(*args)
        write_image(late, CLASS_COLOURS["dog"], 900)
        gone.unlink()
        return computed

    monkeypatch.setattr(run_module, "_compute", compute_then_edit)
    result = _run(split_data, out)
    paths = read_cache(out).rows.path
    assert (result.computed, result.rows) == (1, 21)
    assert "train/dog/dog_800.jpg" in paths and "train/dog/dog_900.jpg" not in paths
    assert "test/cat/cat_000.jpg" in paths
    monkeypatch.setattr(run_module, "_compute", real)
    again = _run(split_data, out)
    paths = read_cache(out).rows.path
    assert (again.computed, again.rows) == (1, 21)  # the late file in, the deleted one out
    assert "train/dog/dog_900.jpg" in paths and "test/cat/cat_000.jpg" not in paths


def test_a_walk_made_ahead_gives_its_folders_in_order_and_stops_when_left(tmp_path):
    import threading

    def numbers():
        yield from range(100)

    assert list(update._ahead(numbers())) == list(range(100))
    before = threading.active_count()
    taken = update._ahead(numbers())
    assert [next(taken), next(taken)] == [0, 1]
    taken.close()  # the reader stops early: the thread making them ends
    assert threading.active_count() == before

    def failing():
        yield 1
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        list(update._ahead(failing()))


def test_the_survey_keeps_the_changes_not_the_rows(split_data, tmp_path):
    """Between the walk and the second pass an update keeps the files to read, each with the existing row it
    comes before, and the runs of existing rows left out."""
    out = tmp_path / "c.h5"
    _run(split_data, out)
    paths = read_cache(out).rows.path  # the walk's order
    cats = split_data / "train" / "cat"
    (cats / "cat_002.png").unlink()
    write_image(cats / "cat_003.jpg", CLASS_COLOURS["dog"], 901)  # changed
    os.utime(cats / "cat_003.jpg", ns=(1, 1))
    write_image(cats / "cat_0025.jpg", CLASS_COLOURS["cat"], 902)  # between cat_002 and cat_003 by name
    write_image(split_data / "test" / "dog" / "dog_900.jpg", CLASS_COLOURS["dog"], 903)  # after every row
    old = read_cache(out, with_vectors=False, with_rows=False, located=False)
    intact = np.ones(len(old.locations.files), dtype=bool)
    found = update.survey(run_module.plan_walk(split_data), old, intact, assume_unchanged=False)
    assert [item.sample.relpath for item in found.new] == [
        "train/cat/cat_0025.jpg", "train/cat/cat_003.jpg", "test/dog/dog_900.jpg"
    ]  # fmt: skip
    changed = paths.index("train/cat/cat_003.jpg")
    assert found.new_before().tolist() == [changed, changed, len(paths)]
    left_out = {paths.index("train/cat/cat_002.png"), changed}
    assert found.dropped.runs == 1  # the two rows are neighbours
    kept = found.dropped.kept(0, len(paths))
    assert [i for i in range(len(paths)) if not kept[i]] == sorted(left_out)
    assert (found.reused, found.removed, found.listed) == (len(paths) - 2, 1, len(paths) + 1)


def test_dropped_rows_tell_each_block_what_it_keeps():
    rng = np.random.default_rng(5)
    n = 1000
    kept_rows = np.sort(rng.choice(n, size=700, replace=False))
    dropped = update.Dropped()
    for part in np.array_split(kept_rows, 37):
        dropped.keep(part)
    dropped.finish(n)
    reference = set(kept_rows.tolist())
    for start in range(0, n, 64):
        stop = min(start + 64, n)
        assert dropped.kept(start, stop).tolist() == [i in reference for i in range(start, stop)]
    with pytest.raises(update.NotInWalkOrder):
        dropped.keep(np.array([3]))
