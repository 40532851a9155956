"""Reading a dataset's layout (split folders, class folders or a CSV manifest) into labelled images, as columns."""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from featcache.errors import DatasetError
from featcache.images import IMAGE_SUFFIX_TUPLE
from featcache.locations import is_url, shown_location
from featcache.names import decode_name, encode_name

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
_SUFFIXES = tuple(suffix.encode() for suffix in IMAGE_SUFFIX_TUPLE)
STAT_ROWS = 8192  # files stat-ed per block by stat_files


class Sample(NamedTuple):
    """One image: ``relpath`` is relative to the data folder, with ``/`` separators."""

    relpath: str
    label: str
    split: str | None  # None until assigned from the content hash


@dataclass
class Dataset:
    """The images of a data folder in listing order, as columns (no object per image: a listing of
    millions stays small), the sorted class names and what was set aside while scanning."""

    root: Path | str  # a local folder, or the URL of an object store
    layout: str
    paths: np.ndarray  # bytes (n,): each image's path relative to the data folder, "/"-separated
    labels: np.ndarray  # int32 (n,): index into class_names
    splits: np.ndarray  # bytes (n,): train | validation | test, b"" where the content hash decides
    class_names: list[str]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)
    listed: tuple[np.ndarray, np.ndarray] | None = None  # an object store's sizes and version stamps (int64 (n,))

    def __len__(self) -> int:
        return len(self.paths)


def scan(data_dir: Path, manifest: Path | None = None, allow_outside: bool = False) -> Dataset:
    """Find every image of ``data_dir`` and its class and split (b"" where hashing decides).

    Files and folders whose real path leaves ``data_dir`` (through a symlink anywhere on the way, or a
    manifest's ``..``) are refused unless ``allow_outside``. Files are listed, not stat-ed
    (:func:`stat_files` does that). A URL is listed through its store, with each object's size and version.
    """
    if is_url(data_dir):
        if manifest is not None:
            raise DatasetError(f"--manifest is read for local data folders only; lay {data_dir} out as class folders")
        dataset = _scan_store(data_dir)
        _check_classes(dataset)
        return dataset
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist or is not a folder; pass a folder of class folders")
    fence = None if allow_outside else root.resolve()
    dataset = _scan_manifest(root, Path(manifest), fence) if manifest is not None else _scan_folders(root, fence)
    _check_classes(dataset)
    return dataset


def _scan_folders(root: Path, fence: Path | None) -> Dataset:
    """The images of the split or class folders of ``root``, each folder's files in order by name (bytes),
    then its sub-folders by name."""
    refused: list[tuple[str, str]] = []
    layout, tops = _tops(root, fence, refused)
    found = _Found(tops[0][2])
    found.rejected = refused
    for prefix, split, classes in tops:
        for label in classes:
            start = f"{prefix}/{label}/" if prefix else f"{label}/"
            for rel, names in _walk_images(os.fsencode(root / start), os.fsencode(start), fence, found.rejected):
                found.add([rel + name for name in names.tolist()], label, split)
    return found.dataset(root, layout)


def _scan_store(url: str) -> Dataset:
    """The images of the split or class folders under ``url``, in the order that a walk of the same folders on
    disk gives, with each object's size and version: one listing of the store, no request per object."""
    from featcache.extraction.store import ObjectStore

    paths, size, stamps = ObjectStore(url).listing()
    listed = paths.tolist()
    parts = [path.split(b"/") for path in listed]
    kept = [i for i, path in enumerate(listed) if b"/" in path and not path.startswith(b".") and b"/." not in path]
    aliases = sorted({decode_name(parts[i][0]) for i in kept} & SPLIT_ALIASES.keys())
    seen: dict[str, str] = {}
    for name in aliases:
        if SPLIT_ALIASES[name] in seen:
            raise DatasetError(f"{shown_location(url)} has both {seen[SPLIT_ALIASES[name]]}/ and {name}/; keep one")
        seen[SPLIT_ALIASES[name]] = name
    if aliases and "train" not in seen:
        raise DatasetError(f"{shown_location(url)} has split folders but no train/ to read; add train/<class>/ folders")
    tops = [(seen[s].encode(), s) for s in SPLITS if s in seen] if aliases else [(b"", None)]
    depth = 1 if aliases else 0
    groups: dict[tuple[bytes, bytes], list[int]] = {}
    for i in kept:
        p = parts[i]
        if len(p) >= depth + 2 and (not depth or p[0] in {top for top, _ in tops}):
            group = groups.setdefault((p[0] if depth else b"", p[depth]), [])
            if p[-1].lower().endswith(_SUFFIXES):
                group.append(i)
    if not groups:
        raise DatasetError(
            f"{shown_location(url)} has no class folders; lay images out as <url>/<class>/<image> "
            f"or <url>/train/<class>/<image>"
        )
    order: list[int] = []
    found = None
    for top, split in tops:
        classes = sorted(decode_name(label) for t, label in groups if t == top)
        found = found or _Found(classes)
        for label in classes:
            members = sorted(groups[top, encode_name(label)], key=lambda i: _walk_key(parts[i]))
            found.add([paths[i] for i in members], label, split)
            order += members if label in found.class_names else []
    dataset = found.dataset(shown_location(url), "split-folders" if depth else "class-folders")  # as messages name it
    dataset.listed = (size[order], stamps[order])
    return dataset


def _walk_key(parts: list[bytes]) -> list[tuple[int, bytes]]:
    """Where a path (its components below its class folder and the class folder itself first) comes in a walk:
    a folder's files by name, then its sub-folders by name."""
    return [(1, name) for name in parts[:-1]] + [(0, parts[-1])]


def _tops(root: Path, fence: Path | None, refused: list) -> tuple[str, list[tuple[str, str | None, list[str]]]]:
    """The layout of ``root`` and the (split folder, split, class folders) to walk in order (train first:
    its classes are the class names); split and class folders refused are added to ``refused``."""
    if not any((root / name).is_dir() for name in SPLIT_ALIASES):
        classes = _class_dirs(root, "", fence, refused)
        if not classes:
            raise DatasetError(
                f"{root} has no class folders; lay images out as {root}/<class>/<image> "
                f"or {root}/train/<class>/<image>, or pass --manifest"
            )
        return "class-folders", [("", None, classes)]
    seen: dict[str, str] = {}
    for name in sorted(os.listdir(root)):
        split = SPLIT_ALIASES.get(name)
        if split is None or not (root / name).is_dir():
            continue
        if split in seen:
            raise DatasetError(f"{root} has both {seen[split]}/ and {name}/; keep one of them")
        reason = _folder_refusal(root / name, fence)
        if reason:
            refused.append((name, reason))
            continue
        seen[split] = name
    if "train" not in seen:
        why = dict(refused).get("train", "") and f" (train/: {dict(refused)['train']}; pass --allow-outside to read it)"
        raise DatasetError(f"{root} has split folders but no train/ to read{why}; add train/<class>/ folders")
    return "split-folders", [
        (seen[s], s, _class_dirs(root / seen[s], seen[s] + "/", fence, refused)) for s in SPLITS if s in seen
    ]


def splits_for_hashes(sha256s, val_fraction: float, test_fraction: float) -> np.ndarray:
    """The split of each image from its hex content hash (fixed-width bytes, or str), as bytes (n,): the
    first 16 hex digits as a fraction ``u`` of 2**64, test where ``u < test_fraction``, validation where
    ``u < test_fraction + val_fraction``, train above; the same bytes land in the same split anywhere."""
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


def _class_dirs(folder: Path, rel: str, fence: Path | None, refused: list) -> list[str]:
    """The class folders of ``folder`` (``rel`` from the data folder), sorted as Keras sorts them (plain
    strings); hidden folders are not classes, and symlinked ones leaving ``fence`` are added to ``refused``."""
    found = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        reason = _folder_refusal(Path(entry.path), fence) if entry.is_symlink() else None
        if reason:
            refused.append((rel + entry.name, reason))
        else:
            found.append(entry.name)
    return sorted(found)


def _folder_refusal(folder: Path, fence: Path | None) -> str | None:
    """Why the folder ``folder`` (a symlink, or reached through one) cannot be walked, or None."""
    try:
        target = folder.resolve(strict=True)
    except (OSError, RuntimeError):
        return "broken symlink or symlink loop"
    if fence is not None and not target.is_relative_to(fence):
        return "symlink points outside the data folder"
    if Path(os.path.realpath(folder.parent)).is_relative_to(target):
        return "symlink loop: the folder holds the link"
    return None


class _Found:
    """What a walk finds, a folder at a time: the kept files' paths, labels and splits as column chunks,
    where each folder's rows are, the refused files with the reason, and labels of validation or test
    that train lacks."""

    def __init__(self, class_names: list[str]):
        self.class_names = class_names
        self._label_of = {name: i for i, name in enumerate(class_names)}
        self.chunks: dict[str, list[np.ndarray]] = {"paths": [], "labels": [], "splits": []}
        self.rejected: list[tuple[str, str]] = []
        self.unknown: dict[str, set[str]] = {}  # split -> labels not among class_names

    def add(self, paths: list[bytes], label: str | int, split: str | bytes | None) -> None:
        """Files of class ``label`` (a name, or its index) and split ``split``: a walked folder's (in order by
        name), or consecutive rows of a manifest."""
        if not paths:
            return
        if isinstance(label, str) and label not in self._label_of:
            self.unknown.setdefault(split or "train", set()).add(label)
            return
        chunks, paths = self.chunks, np.array(paths, dtype=bytes)
        index = self._label_of[label] if isinstance(label, str) else label
        chunks["paths"].append(paths)
        chunks["labels"].append(np.full(len(paths), index, dtype=np.int32))
        split = split.encode() if isinstance(split, str) else split or b""
        chunks["splits"].append(np.full(len(paths), split, dtype="S10"))

    def dataset(self, root: Path, layout: str) -> Dataset:
        """The dataset of what was found; DatasetError when validation or test hold classes train lacks."""
        for split in ("validation", "test"):
            extra = sorted(self.unknown.get(split, ()))
            if extra:
                raise DatasetError(
                    f"classes {', '.join(extra)} appear in {split} but not in train; "
                    f"add training images for them or remove them from {split}"
                )
        paths, labels, splits = (_joined(self.chunks[name], name) for name in ("paths", "labels", "splits"))
        return Dataset(root, layout, paths, labels, splits, self.class_names, self.rejected)


def _joined(chunks: list[np.ndarray], name: str) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype={"paths": "S1", "splits": "S10"}.get(name, np.int32))


def _walk_images(folder: bytes, rel: bytes, fence: Path | None, rejected: list) -> Iterator[tuple[bytes, np.ndarray]]:
    """(folder ``rel``, its image files' names sorted (bytes (k,))) of ``folder`` (``rel`` from the data
    folder, ending in "/") and of its sub-folders: the files of a folder, then its sub-folders by name,
    folders without images left out; refused files are added to ``rejected``."""
    names, folders = _list_folder(folder, rel, fence, rejected)
    if len(names):
        yield rel, names
    del names
    for name in sorted(folders):
        yield from _walk_images(os.path.join(folder, name), rel + name + b"/", fence, rejected)


def _list_folder(folder: bytes, rel: bytes, fence: Path | None, rejected: list) -> tuple[np.ndarray, list[bytes]]:
    """The image files' names of ``folder`` (sorted, bytes (k,)) and its sub-folders' names, hidden entries
    skipped; refused files are added to ``rejected``.

    Directory entries carry their type, so listing costs no system call per file (a kept file's stat
    comes later, see :func:`stat_files`). Names are bytes, as the file system holds them.
    """
    try:
        with os.scandir(folder) as listing:
            entries = [entry for entry in listing if not entry.name.startswith(b".")]
    except OSError:
        return np.zeros(0, dtype="S1"), []
    files, folders, refused = [], [], []
    for entry in entries:
        image = entry.name.lower().endswith(_SUFFIXES)
        if entry.is_file(follow_symlinks=False):
            if image:
                files.append(entry.name)
            continue
        if entry.is_dir(follow_symlinks=False):
            folders.append(entry.name)
            if not image:
                continue  # (an image name that is a folder: walked, and refused as an image below)
        path = Path(os.fsdecode(entry.path))
        if entry.is_symlink() and path.is_dir():
            reason = _folder_refusal(path, fence)  # a symlinked folder inside the data folder is walked
            if not reason:
                folders.append(entry.name)
        elif image:
            reason = _refusal(path, fence)  # a symlink to a file inside the data folder is kept
            if not reason:
                files.append(entry.name)
        else:
            continue
        if reason:
            refused.append((os.fsdecode(rel + entry.name), reason))
    rejected += sorted(refused)
    found = np.array(files, dtype=bytes) if files else np.zeros(0, dtype="S1")
    found.sort(kind="stable")  # bytes: code point order
    return found, folders


def stat_files(root: Path, paths: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Size and mtime in ns (int64 (n,) each; size -1 where a file cannot be read) of the files ``paths``
    (bytes (n,), relative to ``root``), one ``os.stat`` each following symlinks, and (relpath, reason) of the
    files that cannot be read."""
    base = os.fsencode(root) + b"/"
    size, mtime, unreadable = np.full(len(paths), -1, dtype=np.int64), np.zeros(len(paths), dtype=np.int64), []
    for start in range(0, len(paths), STAT_ROWS):  # a block at a time: no Python object per file is held
        for i, path in enumerate(paths[start : start + STAT_ROWS].tolist(), start):
            try:
                st = os.stat(base + path)
            except OSError as exc:
                unreadable.append((os.fsdecode(path), f"cannot read file: {exc.strerror}"))
                continue
            size[i], mtime[i] = st.st_size, st.st_mtime_ns
    return size, mtime, unreadable


def _refusal(item: Path, fence: Path | None) -> str | None:
    """Why ``item`` cannot be read as an image file, or None; its real path (through symlinks anywhere on
    the way) must stay inside ``fence``."""
    try:
        target = item.resolve(strict=True)
    except (OSError, RuntimeError):
        return "broken symlink or symlink loop" if item.is_symlink() else "file not found"
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
    # UTF-8; a path's bytes that are not UTF-8 are kept as they are (surrogateescape), as the file system names it
    with open(manifest, newline="", encoding="utf-8", errors="surrogateescape") as fh:
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
    found = _Found(sorted({s.label for s in samples if s.split in (None, "train")}))
    found.rejected = rejected
    for (label, split), group in itertools.groupby(samples, key=lambda s: (s.label, s.split)):
        found.add([os.fsencode(s.relpath) for s in group], label, split)
    return found.dataset(root, "manifest")


def _manifest_row(root, fence, manifest, line, row):
    # a path is taken as written (a file name may begin or end with spaces); a label loses its outer spaces
    rel, label = row.get("path") or "", (row.get("label") or "").strip()
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
    """DatasetError unless the data folder held images of at least two classes."""
    root, images, class_names = dataset.root, len(dataset), dataset.class_names
    if not images:
        raise DatasetError(f"no images found under {root}; featcache reads JPEG, PNG, BMP, GIF, WebP and TIFF")
    if len(class_names) < 2:
        found = ", ".join(class_names) or "none"
        raise DatasetError(
            f"found {len(class_names)} class ({found}) in {root}; a classifier needs at least two class folders"
        )
