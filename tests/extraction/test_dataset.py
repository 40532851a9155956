"""dataset.py: the three layouts, Keras class order, stable hash splits, and layout errors."""

from __future__ import annotations

import hashlib
import os

import pytest

from featcache.errors import DatasetError
from featcache.extraction.dataset import Sample, scan, splits_for_hashes
from tests.support import CLASS_COLOURS, make_split_dataset, write_image


def _samples(ds) -> list[Sample]:
    """Every image of a scanned dataset as a Sample (path, class name, split or None)."""
    names = ds.class_names
    return [Sample(os.fsdecode(p), names[c], s.decode() or None) for p, c, s in zip(ds.paths, ds.labels, ds.splits)]


def test_split_folders_give_splits_and_sorted_classes(tmp_path):
    root = make_split_dataset(tmp_path / "d", classes=("dog", "cat", "fox"))
    ds = scan(root)
    assert ds.layout == "split-folders"
    assert ds.class_names == ["cat", "dog", "fox"]
    counts = {s: sum(1 for x in _samples(ds) if x.split == s) for s in ("train", "validation", "test")}
    assert counts == {"train": 18, "validation": 6, "test": 6}


def test_keras_orders_classes_as_plain_strings(tmp_path):
    for name in ("b", "B", "a10", "a2", "t-shirt", "shirt"):
        write_image(tmp_path / "train" / name / "x.jpg", (1, 2, 3), 0)
    assert scan(tmp_path).class_names == sorted(["b", "B", "a10", "a2", "t-shirt", "shirt"])


def test_val_is_an_alias_of_validation(tmp_path):
    make_split_dataset(tmp_path, counts={"train": 2, "val": 1})
    ds = scan(tmp_path)
    assert {s.split for s in _samples(ds)} == {"train", "validation"}


def test_class_missing_from_validation_is_fine_but_unknown_class_is_an_error(tmp_path):
    make_split_dataset(tmp_path, counts={"train": 2}, classes=("cat", "dog", "fox"))
    make_split_dataset(tmp_path, counts={"validation": 1}, classes=("cat",))
    assert len(_samples(scan(tmp_path))) == 7
    write_image(tmp_path / "test" / "wolf" / "w.jpg", (9, 9, 9), 1)
    with pytest.raises(DatasetError, match="wolf appear in test but not in train"):
        scan(tmp_path)


def test_class_folders_only_leave_split_to_the_hash(tmp_path):
    for label, colour in CLASS_COLOURS.items():
        for i in range(3):
            write_image(tmp_path / label / f"{i}.jpg", colour, i)
    ds = scan(tmp_path)
    assert ds.layout == "class-folders" and all(s.split is None for s in _samples(ds))
    assert ds.class_names == ["cat", "dog", "fox"]


def split_for_hash(sha256: str, val_fraction: float, test_fraction: float) -> str:
    """The rule, one hash at a time: the first 64 bits of the hash as a fraction of 2**64, test below
    ``test_fraction``, validation below ``test_fraction + val_fraction``, train above."""
    u = int(sha256[:16], 16) / 2.0**64
    return "test" if u < test_fraction else "validation" if u < test_fraction + val_fraction else "train"


def test_hash_split_is_stable_and_follows_fractions():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    splits = [s.decode() for s in splits_for_hashes(hashes, 0.1, 0.2)]
    assert splits == [s.decode() for s in splits_for_hashes(hashes, 0.1, 0.2)]
    assert 0.08 < splits.count("validation") / 4000 < 0.12
    assert 0.18 < splits.count("test") / 4000 < 0.22


def test_non_images_are_ignored_and_odd_entries_refused(tmp_path):
    make_split_dataset(tmp_path, counts={"train": 2})
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("hi")
    (tmp_path / "train" / "cat" / "folder.jpg").mkdir()
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "train" / "cat" / "broken.jpg")
    ds = scan(tmp_path)
    assert len(_samples(ds)) == 4
    assert dict(ds.rejected) == {
        "train/cat/broken.jpg": "broken symlink or symlink loop",
        "train/cat/folder.jpg": "a folder, not a file",
    }


def test_symlink_outside_the_data_folder_is_not_followed(tmp_path):
    outside = write_image(tmp_path / "outside.jpg", (1, 1, 1), 0)
    root = make_split_dataset(tmp_path / "d", counts={"train": 1})
    os.symlink(outside, root / "train" / "cat" / "link.jpg")
    assert dict(scan(root).rejected) == {"train/cat/link.jpg": "symlink points outside the data folder"}


def test_manifest_layout(tmp_path):
    root = make_split_dataset(tmp_path / "d", counts={"train": 2})
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,split\ntrain/cat/cat_000.jpg,kitty,train\ntrain/dog/dog_000.jpg,puppy,\n"
        "train/dog/dog_001.jpg,puppy,val\nmissing.jpg,kitty,train\n"
    )
    ds = scan(root, manifest)
    assert ds.class_names == ["kitty", "puppy"]
    assert [(s.relpath, s.split) for s in _samples(ds)] == [
        ("train/cat/cat_000.jpg", "train"),
        ("train/dog/dog_000.jpg", None),
        ("train/dog/dog_001.jpg", "validation"),
    ]
    assert ds.rejected == [("missing.jpg", "file not found")]


@pytest.mark.parametrize("bad", ["../escape.jpg", "/etc/passwd"])
def test_manifest_paths_cannot_escape_the_data_folder(tmp_path, bad):
    root = make_split_dataset(tmp_path / "d", counts={"train": 1})
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{bad},x\ntrain/cat/cat_000.jpg,y\n")
    with pytest.raises(DatasetError, match="leaves the data folder"):
        scan(root, manifest)


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "no class folders"),
        (lambda p: (p / "cat").mkdir(parents=True), "no images found"),
        (lambda p: write_image(p / "cat" / "a.jpg", (1, 2, 3), 0), "a classifier needs at least two"),
        (lambda p: write_image(p / "validation" / "cat" / "a.jpg", (1, 2, 3), 0), "no train/"),
    ],
)
def test_unusable_folders_are_refused_with_a_hint(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError, match=message):
        scan(root)


@pytest.mark.parametrize("val, test", [(0.1, 0.1), (0.0, 0.25), (0.3, 0.0), (0.5, 0.5)])
def test_splits_for_hashes_agree_with_the_stated_rule(val, test):
    hashes = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(3000)]
    hashes += ["0" * 64, "f" * 64, "1999999999999999" + "0" * 48, "3333333333333333" + "f" * 48]
    expected = [split_for_hash(h, val, test) for h in hashes]
    assert [s.decode() for s in splits_for_hashes(hashes, val, test)] == expected
    assert set(expected) > {"train"} or val + test == 0


def test_files_are_listed_by_name_then_sub_folders(tmp_path):
    root = make_split_dataset(tmp_path / "d", counts={"train": 1})
    folder = root / "train" / "cat"
    for name in ("é.png", "Z.png", "a.jpg", "sub/b.jpg", "sub/a.jpg", "a.jpg.d/x.jpg", "d.jpg/y.jpg", ".hidden.jpg"):
        write_image(folder / name, (200, 10, 10), 5)
    (folder / "notes.txt").write_text("not an image")
    ds = scan(root)
    cats = [s.relpath for s in _samples(ds) if s.label == "cat"]
    assert cats == [
        "train/cat/Z.png", "train/cat/a.jpg", "train/cat/cat_000.jpg", "train/cat/é.png",
        "train/cat/a.jpg.d/x.jpg", "train/cat/d.jpg/y.jpg", "train/cat/sub/a.jpg", "train/cat/sub/b.jpg",
    ]  # fmt: skip
    assert ds.rejected == [("train/cat/d.jpg", "a folder, not a file")]


def _paths(ds) -> list[str]:
    return sorted(s.relpath for s in _samples(ds))


def test_a_split_folder_symlinked_outside_is_refused_not_walked(tmp_path):
    outside = make_split_dataset(tmp_path / "elsewhere", counts={"test": 2}, start_seed=50)
    root = make_split_dataset(tmp_path / "d", counts={"train": 2, "validation": 1})
    os.symlink(outside / "test", root / "test")
    ds = scan(root)
    assert not [p for p in _paths(ds) if p.startswith("test/")]
    assert ("test", "symlink points outside the data folder") in ds.rejected
    assert len(_samples(scan(root, allow_outside=True))) == len(_samples(ds)) + 4


def test_a_class_folder_or_sub_folder_symlinked_outside_is_refused(tmp_path):
    outside = make_split_dataset(tmp_path / "elsewhere", counts={"train": 2}, start_seed=50)
    root = make_split_dataset(tmp_path / "d", counts={"train": 2}, classes=("cat", "dog"))
    os.symlink(outside / "train" / "cat", root / "train" / "fox")  # a class folder
    os.symlink(outside / "train" / "dog", root / "train" / "cat" / "more")  # a sub-folder
    ds = scan(root)
    assert _paths(ds) == ["train/cat/cat_000.jpg", "train/cat/cat_001.jpg", "train/dog/dog_000.jpg",
                          "train/dog/dog_001.jpg"]  # fmt: skip
    assert sorted(ds.rejected) == [
        ("train/cat/more", "symlink points outside the data folder"),
        ("train/fox", "symlink points outside the data folder"),
    ]
    opened = scan(root, allow_outside=True)
    assert opened.class_names == ["cat", "dog", "fox"]
    assert "train/cat/more/dog_000.jpg" in _paths(opened) and "train/fox/cat_000.jpg" in _paths(opened)


def test_a_symlinked_folder_inside_the_data_folder_is_walked_and_a_loop_refused(tmp_path):
    root = make_split_dataset(tmp_path / "d", counts={"train": 2})
    write_image(root / "extra" / "e.jpg", CLASS_COLOURS["cat"], 70)
    os.symlink(root / "extra", root / "train" / "cat" / "linked")
    os.symlink(root / "train", root / "train" / "dog" / "up")
    ds = scan(root)
    assert "train/cat/linked/e.jpg" in _paths(ds)
    assert dict(ds.rejected) == {"train/dog/up": "symlink loop: the folder holds the link"}


def test_a_manifest_path_through_a_symlinked_folder_outside_is_refused(tmp_path):
    outside = write_image(tmp_path / "elsewhere" / "x.jpg", (1, 1, 1), 0)
    root = make_split_dataset(tmp_path / "d", counts={"train": 2})
    os.symlink(outside.parent, root / "sub")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\ntrain/cat/cat_000.jpg,cat\ntrain/dog/dog_000.jpg,dog\nsub/x.jpg,cat\n")
    ds = scan(root, manifest)
    assert _paths(ds) == ["train/cat/cat_000.jpg", "train/dog/dog_000.jpg"]
    assert ds.rejected == [("sub/x.jpg", "symlink points outside the data folder")]
    assert "sub/x.jpg" in _paths(scan(root, manifest, allow_outside=True))
