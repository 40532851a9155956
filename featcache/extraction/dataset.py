"""Reading a dataset's layout (split folders, class folders or a CSV manifest) into labelled samples."""

from __future__ import annotations

import csv
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from featcache.errors import DatasetError
from featcache.images import IMAGE_SUFFIX_TUPLE

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}


class Sample(NamedTuple):
    """One image: ``relpath`` is relative to the data folder, with ``/`` separators (a tuple: cheap by the million)."""

    relpath: str
    label: str
    split: str | None  # None until assigned from the content hash


@dataclass
class Dataset:
    """The samples of a data folder, the sorted class names and what was set aside while scanning."""

    root: Path
    layout: str
    samples: list[Sample]
    class_names: list[str]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)
    stats: list[tuple[int, int]] = field(default_factory=list)  # (size, mtime_ns) of each sample, when stat-ed


def scan(data_dir: Path, manifest: Path | None = None, allow_outside: bool = False, stat: bool = True) -> Dataset:
    """Find every image of ``data_dir`` and its class and split (None where hashing decides).

    Symlinks leading out of ``data_dir`` and manifest paths that leave it are refused unless
    ``allow_outside``. Listed files are stat-ed (``Dataset.stats``) unless ``stat`` is False.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist or is not a folder; pass a folder of class folders")
    fence = None if allow_outside else root.resolve()
    if manifest is not None:
        dataset = _scan_manifest(root, Path(manifest), fence)
    elif any(_child_dir(root, name) for name in SPLIT_ALIASES):
        dataset = _scan_split_folders(root, fence, stat)
    else:
        dataset = _scan_class_folders(root, fence, stat)
    _check_classes(dataset)
    return dataset


def split_for_hash(sha256: str, val_fraction: float, test_fraction: float) -> str:
    """The split of an image from its content hash: the same bytes land in the same split anywhere."""
    u = int(sha256[:16], 16) / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "validation"
    return "train"


def splits_for_hashes(sha256s, val_fraction: float, test_fraction: float) -> np.ndarray:
    """:func:`split_for_hash` of many hex content hashes at once (fixed-width bytes, or str), as bytes (n,)."""
    hexes = np.asarray(sha256s, dtype="S64")
    digits = np.frombuffer(hexes.tobytes(), dtype=np.uint8).reshape(len(hexes), 64)[:, :16].astype(np.uint64)
    nibbles = np.where(digits >= ord("a"), digits - ord("a") + 10, digits - ord("0"))
    value = np.zeros(len(hexes), dtype=np.uint64)
    for k in range(16):
        value = (value << np.uint64(4)) | nibbles[:, k]
    u = value.astype(np.float64) / 2.0**64
    found = np.full(len(hexes), b"train", dtype="S10")
    found[u < test_fraction + val_fraction] = b"validation"
    found[u < test_fraction] = b"test"
    return found


def _child_dir(root: Path, name: str) -> Path | None:
    path = root / name
    return path if path.is_dir() else None


def _scan_split_folders(root: Path, fence: Path | None, stat: bool) -> Dataset:
    seen: dict[str, str] = {}
    samples: list[Sample] = []
    rejected: list[tuple[str, str]] = []
    class_names: list[str] = []
    stats: list[tuple[int, int]] = []
    for name in sorted(os.listdir(root)):
        split = SPLIT_ALIASES.get(name)
        if split is None or not (root / name).is_dir():
            continue
        if split in seen:
            raise DatasetError(f"{root} has both {seen[split]}/ and {name}/; keep one of them")
        seen[split] = name
    if "train" not in seen:
        raise DatasetError(f"{root} has split folders but no train/; add train/<class>/ folders")
    for split in SPLITS:
        if split in seen:
            classes = _class_dirs(root / seen[split])
            if split == "train":
                class_names = classes
            _collect(root, seen[split], classes, split, samples, rejected, fence, stats if stat else None)
    return Dataset(root, "split-folders", samples, class_names, rejected, stats)


def _scan_class_folders(root: Path, fence: Path | None, stat: bool) -> Dataset:
    classes = _class_dirs(root)
    if not classes:
        raise DatasetError(
            f"{root} has no class folders; lay images out as {root}/<class>/<image> "
            f"or {root}/train/<class>/<image>, or pass --manifest"
        )
    samples: list[Sample] = []
    rejected: list[tuple[str, str]] = []
    stats: list[tuple[int, int]] = []
    _collect(root, "", classes, None, samples, rejected, fence, stats if stat else None)
    return Dataset(root, "class-folders", samples, classes, rejected, stats)


def _class_dirs(folder: Path) -> list[str]:
    # Keras sorts class folder names as plain strings; hidden folders are not classes.
    return sorted(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))


class _Found(NamedTuple):
    """What a walk finds: samples with their (size, mtime_ns), and refused files with the reason."""

    samples: list[Sample]
    stats: list[tuple[int, int]] | None  # None: not stat-ed
    rejected: list[tuple[str, str]]


def _collect(root, prefix, classes, split, samples, rejected, fence, stats) -> None:
    found = _Found(samples, stats, rejected)
    for label in classes:
        start = f"{prefix}/{label}/" if prefix else f"{label}/"
        _walk_images(str(root / start), start, fence, (label, split), found)


def _walk_images(folder: str, rel: str, fence: Path | None, label_split: tuple, found: _Found) -> None:
    """Add the image files under ``folder`` (``rel`` from the data folder, ending in "/") to ``found``:
    the files of a folder by name, then its sub-folders by name, hidden entries skipped.

    Directory entries carry their type, so only a file that is kept costs a system call (its stat,
    skipped when ``found.stats`` is None): listing a million files must not cost four million.
    """
    try:
        entries = sorted(os.scandir(folder), key=_name)
    except OSError:
        return
    label, split = label_split
    samples, stats, suffixes = found.samples, found.stats, IMAGE_SUFFIX_TUPLE
    for entry in entries:
        name = entry.name
        if name[0] == "." or not name.lower().endswith(suffixes):
            continue
        if not entry.is_file(follow_symlinks=False):
            reason = _refusal(entry, fence)  # a symlink to a file inside the data folder is kept
            if reason:
                found.rejected.append((rel + name, reason))
                continue
        if stats is not None:
            stat = entry.stat()
            stats.append((stat.st_size, stat.st_mtime_ns))
        samples.append(Sample(rel + name, label, split))
    for entry in entries:
        if entry.name[0] != "." and entry.is_dir(follow_symlinks=False):
            _walk_images(entry.path, f"{rel}{entry.name}/", fence, label_split, found)


_name = operator.attrgetter("name")


def _refusal(item, fence: Path | None) -> str | None:
    """Why ``item`` (a Path or an os.DirEntry) cannot be read as an image file, or None; symlinks
    must stay inside ``fence``."""
    if item.is_symlink():
        try:
            target = Path(item).resolve(strict=True)
        except (OSError, RuntimeError):
            return "broken symlink or symlink loop"
        if fence is not None and not target.is_relative_to(fence):
            return "symlink points outside the data folder"
    if item.is_dir():
        return "a folder, not a file"
    if not item.is_file():
        return "not a regular file"
    return None


def _scan_manifest(root: Path, manifest: Path, fence: Path | None) -> Dataset:
    if not manifest.is_file():
        raise DatasetError(f"manifest {manifest} does not exist; pass a CSV file with columns path,label[,split]")
    with open(manifest, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        if not {"path", "label"} <= columns:
            raise DatasetError(f"manifest {manifest} needs columns path,label[,split]; it has {sorted(columns)}")
        rows = list(reader)
    samples, rejected = [], []
    for line, row in enumerate(rows, start=2):
        samples_or_reason = _manifest_row(root, fence, manifest, line, row)
        if isinstance(samples_or_reason, Sample):
            samples.append(samples_or_reason)
        else:
            rejected.append(samples_or_reason)
    train_classes = {s.label for s in samples if s.split in (None, "train")}
    return Dataset(root, "manifest", samples, sorted(train_classes), rejected)


def _manifest_row(root, fence, manifest, line, row):
    rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
    split_name = (row.get("split") or "").strip().lower()
    if not rel or not label:
        raise DatasetError(f"{manifest} line {line}: path and label must not be empty")
    split = SPLIT_ALIASES.get(split_name) if split_name else None
    if split_name and split is None:
        raise DatasetError(f"{manifest} line {line}: split {split_name!r} is not one of train, validation, test")
    path = Path(rel)
    if fence is not None and (path.is_absolute() or ".." in path.parts):
        raise DatasetError(
            f"{manifest} line {line}: path {rel!r} leaves the data folder; give paths relative to {root} "
            f"or pass --allow-outside"
        )
    full = root / path
    reason = _refusal(full, fence) if full.exists() or full.is_symlink() else "file not found"
    return (path.as_posix(), reason) if reason else Sample(path.as_posix(), label, split)


def _check_classes(dataset: Dataset) -> None:
    known = set(dataset.class_names)
    for split in ("validation", "test"):
        extra = sorted({s.label for s in dataset.samples if s.split == split} - known)
        if extra:
            raise DatasetError(
                f"classes {', '.join(extra)} appear in {split} but not in train; "
                f"add training images for them or remove them from {split}"
            )
    if not dataset.samples:
        raise DatasetError(f"no images found under {dataset.root}; featcache reads JPEG, PNG, BMP, GIF, WebP and TIFF")
    if len(dataset.class_names) < 2:
        found = ", ".join(dataset.class_names) or "none"
        raise DatasetError(
            f"found {len(dataset.class_names)} class ({found}) in {dataset.root}; "
            f"a classifier needs at least two class folders"
        )
