"""The HDF5 layout of a feature cache's entry file: reading it, and replacing it whole.

``featcache.cache`` is the only package that knows HDF5: this module the entry file,
:mod:`featcache.cache.shards` the files that hold the vectors, :mod:`featcache.cache.lock` the single
writer, :mod:`featcache.cache.compact` reclaiming space. The layout (format ``featcache-features``,
version 3: every dataset, its dtype and shape, the attributes, the older versions and how they are
upgraded) is written down in ``docs/cache-format.md``; the names below are its datasets.

The entry file is only ever replaced whole (written beside it, then renamed), so it is never
half-written, and shards never change once committed: an update writes its new shards and a new
entry file, and leaves the file untouched when its content digest says nothing changed. Per-row
strings are fixed-width byte strings as wide as the longest value (read, compared and written as one
block of bytes, with no object per row), holding a name's bytes as the file system gives them
(:mod:`featcache.names`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.errors import CacheError
from featcache.names import decode_name, encode_name

log = logging.getLogger(__name__)

FORMAT = "featcache-features"
FORMAT_VERSION = 3
FEATURES, LABEL, SPLIT, PATH, SHA256 = "features", "label", "split", "path", "sha256"
SIZE, MTIME, CLASS_NAMES, QUARANTINE = "size", "mtime_ns", "class_names", "quarantine"
SHARDS = "shards"
AUGMENTED, VIEW_ROW, VIEW = "augmented", "row", "view"
SHARDS_SUFFIX, VIEWS_SUFFIX = ".shards", ".views"  # the folders of shards beside the entry file
CONTENT = "content_sha256"  # attribute: digest of what the entry file holds, timestamps aside
SPLITS = ("train", "validation", "test")
ROW_COLUMNS = (PATH, SHA256, LABEL, SPLIT, SIZE, MTIME)  # the per-row columns; their names are those of Rows
INDEX, ROW = "index", "row"  # per row, in /shards: the shard its vector lies in, and its row there
DIM = "dim"  # attribute of /shards: the vectors' length


@dataclass
class Locations:
    """Where each row's vector lies: shard ``files`` (names in the shards folder) with their row counts
    and sizes, and per row its shard ``index`` (int32 (n,)) and ``row`` in it (int64 (n,))."""

    files: list[str]
    file_rows: list[int]
    file_bytes: list[int]
    index: np.ndarray
    row: np.ndarray
    dim: int


@dataclass
class Views:
    """Augmented views of a cache's train rows: view i is view ``view[i]`` (int32 (m,)) of the image of
    row ``row[i]`` (int64 (m,)), lying where ``locations`` says; ``attrs`` holds their fingerprint, policy,
    seed and count."""

    row: np.ndarray
    view: np.ndarray
    locations: Locations
    attrs: dict

    def __len__(self) -> int:
        return len(self.row)

    @property
    def count(self) -> int:
        return int(self.attrs.get("count", 0))

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]


def shards_dir(cache_path: Path) -> Path:
    """Where the shards of a cache's clean vectors lie."""
    return Path(str(cache_path) + SHARDS_SUFFIX)


def views_folder(cache_path: Path) -> Path:
    """Where the shards of a cache's views lie."""
    return Path(str(cache_path) + VIEWS_SUFFIX)


@dataclass
class Rows:
    """Per-row metadata of a cache, as parallel sequences of length n: lists, or numpy arrays where
    the rows come by the million (strings as object arrays, or as fixed-width UTF-8 bytes)."""

    path: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    mtime_ns: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.path)

    def counts(self, class_names: list[str]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Rows per split (train, validation, test), and per split and class (classes sorted)."""
        return split_counts(split_codes(self.split), np.asarray(self.label, dtype=np.int64), class_names)


def split_codes(names) -> np.ndarray:
    """The index into SPLITS of each split name (str or bytes), int8 (n,); -1 for a name not in SPLITS."""
    names = bytes_column(names)
    codes = np.full(len(names), -1, dtype=np.int8)
    for i, name in enumerate(SPLITS):
        codes[names == name.encode()] = i
    return codes


def split_counts(codes: np.ndarray, label: np.ndarray, class_names: list[str]) -> tuple[dict, dict]:
    """Rows per split and per split and class, from each row's split code (:func:`split_codes`; rows of
    another split are not counted) and label; ValueError for a label outside the classes."""
    k, label = len(class_names), np.asarray(label, dtype=np.int64).reshape(-1)
    if len(label) and (label.min() < 0 or label.max() >= k):
        raise ValueError(f"a label outside the {k} classes")
    kept = codes >= 0
    table = np.bincount(codes[kept].astype(np.int64) * k + label[kept], minlength=len(SPLITS) * k)
    table = table.reshape(len(SPLITS), k)
    per_split = {name: int(table[i].sum()) for i, name in enumerate(SPLITS)}
    per_class = {
        name: {class_names[c]: int(table[i, c]) for c in np.flatnonzero(table[i]).tolist()}
        for i, name in enumerate(SPLITS)
        if per_split[name]
    }
    return per_split, per_class


@dataclass(frozen=True)
class QuarantineEntry:
    path: str
    reason: str
    sha256: str = ""


@dataclass
class Cache:
    """A cache read back: ``features`` is float32 (n, dim), or None when not asked for."""

    path: Path
    attrs: dict
    class_names: list[str]
    rows: Rows
    quarantine: list[QuarantineEntry]
    features: np.ndarray | None = None
    locations: Locations | None = None  # None for a format-1 cache
    n_rows: int = 0  # rows of the cache, also when ``rows`` was not read

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices of ``split``, int64 of shape (m,)."""
        return np.flatnonzero(np.asarray(self.rows.split, dtype=object) == split)


def _str_dtype():
    import h5py

    return h5py.string_dtype("utf-8")


def open_h5(path: Path, mode: str = "r", chunk_cache: bool = False):
    """The HDF5 file of the cache at ``path``. Without ``chunk_cache`` (for its metadata), HDF5 keeps no chunk
    of what is read: rows read a block at a time in order, each once, then cost no memory that grows with
    the file (HDF5 would otherwise keep up to 1 MB of chunks of each dataset read). Vectors are read with it."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise CacheError(f"no feature cache at {path}; run `featcache extract DATA_DIR -o {path}` first")
    try:
        return h5py.File(path, mode, rdcc_nbytes=None if chunk_cache else 0)
    except OSError as exc:
        raise CacheError(
            f"{path} is not a readable HDF5 file ({_short(exc)}); it may be truncated or corrupt — "
            f"rerun featcache extract with --overwrite"
        ) from None


def _short(exc: Exception) -> str:
    return str(exc).split("(")[0].strip().rstrip(",") or type(exc).__name__


def decode_strings(values) -> list[str]:
    """Stored strings as ``str``; every name a file system allows round-trips (see :mod:`featcache.names`)."""
    return [decode_name(v) for v in values]


def read_cache(path: Path, with_vectors: bool = True, with_rows: bool = True) -> Cache:
    """Read a whole cache, its rows decoded (:class:`Rows` of lists); with ``with_vectors=False`` only its
    metadata, with ``with_rows=False`` not even the per-row lists (``Cache.n_rows`` still counts them)."""
    path = Path(path)
    with open_h5(path) as h5:
        attrs = {k: attr_value(v) for k, v in h5.attrs.items()}
        check_format(path, attrs)
        try:
            return _read_body(path, h5, attrs, with_vectors, with_rows)
        except (KeyError, OSError, ValueError) as exc:
            raise damaged(path, exc) from None


def read_columns(path: Path, columns: tuple = ROW_COLUMNS, rows=None) -> Rows:
    """The per-row ``columns`` of a cache (of ROW_COLUMNS) as numpy arrays, strings as fixed-width bytes and
    numbers as int64, the others left empty: of every row, or of the ``rows`` given (increasing indices)."""
    path = Path(path)
    with open_h5(path) as h5:
        try:
            return _row_arrays(h5, columns, None if rows is None else np.asarray(rows, dtype=np.int64))
        except (KeyError, OSError, ValueError) as exc:
            raise damaged(path, exc) from None


def check_format(path: Path, attrs: dict) -> None:
    """CacheError unless ``attrs`` are those of a featcache cache of a format this version reads."""
    if attrs.get("format") != FORMAT:
        raise CacheError(
            f"{path} is an HDF5 file but not a featcache feature cache; pass a file made by featcache extract"
        )
    if int(attrs.get("format_version", -1)) > FORMAT_VERSION:
        raise CacheError(f"{path} has cache format {attrs['format_version']}; upgrade featcache to read it")


def read_rows(path: Path, indices) -> Rows:
    """The metadata of the rows ``indices`` only (increasing), decoded, so sampling a huge cache stays cheap."""
    return _decoded(read_columns(path, ROW_COLUMNS, indices))


#: up to this many rows, :func:`picked` asks HDF5 for the rows themselves; above it, whole blocks of
#: BLOCK_ROWS rows (a point selection gets slower the more points it holds: 100,000 rows of a
#: 1,000,000-row column took minutes)
POINT_ROWS, BLOCK_ROWS = 1024, 1 << 16


def picked(data, idx: np.ndarray) -> np.ndarray:
    """``data[idx]`` of a one-dimensional dataset, for increasing row indices ``idx``."""
    if len(idx) <= POINT_ROWS:
        return data[idx] if len(idx) else data[:0]
    parts = []
    for start in range(int(idx[0]) // BLOCK_ROWS * BLOCK_ROWS, int(idx[-1]) + 1, BLOCK_ROWS):
        lo, hi = np.searchsorted(idx, [start, start + BLOCK_ROWS])
        if hi > lo:  # the block's rows from the first asked to the last
            first = int(idx[lo])
            parts.append(data[first : int(idx[hi - 1]) + 1][idx[lo:hi] - first])
    return np.concatenate(parts)


def damaged(path: Path, exc: Exception) -> CacheError:
    """The error for an entry file that cannot be read as its layout says."""
    return CacheError(f"{path} is damaged ({_short(exc)}); rerun featcache extract with --overwrite")


def _read_body(path, h5, attrs, with_vectors: bool, with_rows: bool) -> Cache:
    rows = _decoded(_row_arrays(h5)) if with_rows else Rows()
    q = [decode_strings(h5[QUARANTINE][name][:]) for name in (PATH, "reason", SHA256)]
    quarantine = [QuarantineEntry(p, r, s) for p, r, s in zip(*q)]
    vectors = h5[FEATURES][:] if with_vectors else None
    names = decode_strings(h5[CLASS_NAMES][:])
    cache = Cache(path, attrs, names, rows, quarantine, vectors, read_locations(h5))
    cache.n_rows = len(h5[LABEL])
    return cache


def _decoded(rows: Rows) -> Rows:
    """Rows read as arrays (:func:`_row_arrays`, every column), strings decoded and numbers as lists."""
    text = [decode_strings(column) for column in (rows.path, rows.sha256, rows.split)]
    return Rows(text[0], text[1], rows.label.tolist(), text[2], rows.size.tolist(), rows.mtime_ns.tolist())


def _row_arrays(h5, columns: tuple = ROW_COLUMNS, rows: np.ndarray | None = None) -> Rows:
    """The per-row ``columns`` (of the ``rows``, increasing, or all) as arrays: strings as fixed-width bytes,
    numbers as int64."""
    read = {name: h5[name][:] if rows is None else picked(h5[name], rows) for name in columns}
    return Rows(
        **{name: bytes_column(v) if name in (PATH, SHA256, SPLIT) else v.astype(np.int64) for name, v in read.items()}
    )


def bytes_column(values) -> np.ndarray:
    """Strings (str, or UTF-8 bytes; a list, an object array or a bytes array) as a fixed-width bytes array
    (numpy ``S``) as wide as the longest: the form the entry file stores per-row strings in."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "S":
        lengths = (int(np.char.str_len(values[i : i + BLOCK_ROWS]).max()) for i in range(0, len(values), BLOCK_ROWS))
        width = max(lengths, default=1)  # measured a block at a time: no length held for every value
        return values if width >= values.dtype.itemsize else values.astype(f"S{max(width, 1)}")
    encoded = [encode_name(v) for v in values]
    return np.array(encoded, dtype=bytes).reshape(len(encoded)) if encoded else np.zeros(0, dtype="S1")


def read_locations(h5) -> Locations | None:
    """The shard of each row, from an open entry file; None for format 1 (vectors in the file)."""
    if SHARDS not in h5:
        return None
    g = h5[SHARDS]
    files = decode_strings(g["file"][:])
    return Locations(files, g["rows"][:].tolist(), g["bytes"][:].tolist(), g[INDEX][:], g[ROW][:], vector_dim(h5))


def vector_dim(group) -> int:
    """The length of the vectors of an open entry file (or of its ``/augmented`` group): from ``shards``'
    attribute where it has one, so that the virtual dataset is not opened (HDF5 then holds every mapping
    of it, some 20 KB each), else from ``features``."""
    if SHARDS in group and DIM in group[SHARDS].attrs:
        return int(group[SHARDS].attrs[DIM])
    return int(group[FEATURES].shape[1])


def attr_value(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_fingerprint(path: Path) -> str | None:
    """The fingerprint of the cache at ``path``, or None when there is no cache there."""
    if not Path(path).exists():
        return None
    with open_h5(path) as h5:
        if attr_value(h5.attrs.get("format")) != FORMAT:
            raise CacheError(f"{path} exists and is not a featcache cache; choose another -o or delete it")
        return attr_value(h5.attrs["fingerprint"])


def write_cache(
    path, attrs, class_names, rows: Rows, locations: Locations, quarantine, views: Views | None = None, previous=None
) -> bool:
    """Write the entry file of a cache whose vectors are in shards beside it (and its ``views``, if any)
    beside ``path``, then rename it over ``path``. With ``previous``, the attributes of the entry file there
    now, nothing is written when the new file would hold the same (returns False)."""
    import h5py

    path = Path(path)
    rows = _stored_form(rows)
    digest = content_digest(attrs, class_names, rows, locations, quarantine, views)
    if unchanged(previous, digest):
        return False  # the same content in the same format
    views_bytes = (len(views) if views is not None else 0) * 32
    _check_space(path, len(rows) * 256 + len(path.name) * 4 + views_bytes + (64 << 10))
    tmp = path.with_name(temporary_name(path, os.getpid()))
    try:
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update({**attrs, "format": FORMAT, "format_version": FORMAT_VERSION, CONTENT: digest})
            _write_entry(h5, path.name, class_names, rows, locations, quarantine, views)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except (OSError, RuntimeError) as exc:  # h5py reports failed flushes as RuntimeError
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def _write_entry(h5, name: str, class_names, rows: Rows, locations: Locations, quarantine, views) -> None:
    """The datasets of the entry file ``name``: rows (in stored form), where their vectors lie, class names,
    quarantine and views."""
    import h5py

    for column_name in (PATH, SHA256, SPLIT):
        column = getattr(rows, column_name)
        h5.create_dataset(column_name, data=column.view(h5py.string_dtype("utf-8", column.dtype.itemsize)))
    h5.create_dataset(LABEL, data=rows.label)
    h5.create_dataset(SIZE, data=rows.size)
    h5.create_dataset(MTIME, data=rows.mtime_ns)
    _write_locations(h5, locations, name + SHARDS_SUFFIX)
    write_strings(h5, CLASS_NAMES, class_names)
    q = h5.create_group(QUARANTINE)
    write_strings(q, PATH, [e.path for e in quarantine])
    write_strings(q, "reason", [e.reason for e in quarantine])
    write_strings(q, SHA256, [e.sha256 for e in quarantine])
    if views is not None:
        _write_views(h5, views, name + VIEWS_SUFFIX)


def unchanged(previous: dict | None, digest: str) -> bool:
    """Whether an entry file of the attributes ``previous`` already holds the content of ``digest``."""
    return previous is not None and previous.get("format_version") == FORMAT_VERSION and previous.get(CONTENT) == digest


def _stored_form(rows: Rows) -> Rows:
    """``rows`` with each column as the entry file stores it: strings as fixed-width bytes, numbers as arrays."""
    n = len(rows)
    return Rows(
        path=bytes_column(rows.path),
        sha256=bytes_column(rows.sha256),
        label=np.asarray(rows.label, dtype=np.int32).reshape(n),
        split=bytes_column(rows.split),
        size=np.asarray(rows.size, dtype=np.int64).reshape(n),
        mtime_ns=np.asarray(rows.mtime_ns, dtype=np.int64).reshape(n),
    )


def content_digest(attrs: dict, class_names, rows: Rows, locations: Locations, quarantine, views) -> str:
    """sha256 of everything an entry file holds except when it was written (``updated_at``); ``rows`` in
    stored form (see :func:`_stored_form`). Each per-row column is hashed on its own, strings as their
    lengths and their bytes without padding, numbers as int64, so strings stored at any width digest alike."""
    digest = hashlib.sha256()
    kept = {k: v for k, v in attrs.items() if k not in ("updated_at", CONTENT, "format", "format_version")}
    digest.update(json.dumps([FORMAT_VERSION, kept], sort_keys=True, default=str).encode())
    per_row = {PATH: rows.path, SHA256: rows.sha256, SPLIT: rows.split, LABEL: rows.label, SIZE: rows.size,
               MTIME: rows.mtime_ns, INDEX: locations.index, ROW: locations.row}  # fmt: skip
    for name, values in per_row.items():
        lengths, content = hashlib.sha256(), hashlib.sha256()
        for start in range(0, len(values), BLOCK_ROWS):  # a block at a time: no copy of the whole column
            block = np.ascontiguousarray(values[start : start + BLOCK_ROWS])
            if block.dtype.kind == "S":
                lengths.update(np.char.str_len(block).astype(np.int64).data)
                raw = block.view(np.uint8)
                content.update(np.ascontiguousarray(raw[raw != 0]).data)
            else:
                content.update(np.ascontiguousarray(block, dtype=np.int64).data)
        digest.update(f"{name}:{len(values)}:{content.hexdigest()}:{lengths.hexdigest()}\0".encode())
    texts = [class_names, *zip(*[(e.path, e.reason, e.sha256) for e in quarantine]), locations.files]
    numbers = [locations.file_rows, locations.file_bytes, [locations.dim]]
    if views is not None:
        where = views.locations
        texts += [where.files, [json.dumps(views.attrs, sort_keys=True, default=str)]]
        numbers += [where.file_rows, where.file_bytes, where.index, where.row, [where.dim], views.row, views.view]
    for column in texts:
        digest.update(f"{len(column)}:".encode() + encode_name("\0".join(map(str, column))))
    for column in numbers:
        digest.update(f"{len(column)}:".encode() + np.ascontiguousarray(column, dtype=np.int64).tobytes())
    return digest.hexdigest()


def temporary_name(path: Path, pid: int | str = "") -> str:
    """The name of the file a cache is written to before its rename (without a pid: its prefix)."""
    return f".{path.name}.tmp-{pid}"


def _check_space(path: Path, needed: int) -> None:
    """Refuse before writing when the new cache cannot fit: HDF5 copes badly with a full disk."""
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise write_error(path, OSError(errno.ENOSPC, f"{free} bytes free, about {needed} needed"))


def _write_views(h5, views: Views, folder: str) -> None:
    g = h5.create_group(AUGMENTED)
    g.attrs.update(views.attrs)
    g.create_dataset(VIEW_ROW, data=np.asarray(views.row, dtype=np.int64).reshape(len(views)))
    g.create_dataset(VIEW, data=np.asarray(views.view, dtype=np.int32).reshape(len(views)))
    _write_locations(g, views.locations, folder)


def read_views(path: Path) -> Views | None:
    """The augmented views of the cache at ``path``, or None when it has none."""
    path = Path(path)
    with open_h5(path) as h5:
        if AUGMENTED not in h5:
            return None
        g = h5[AUGMENTED]
        try:
            attrs = {k: attr_value(v) for k, v in g.attrs.items()}
            return Views(g[VIEW_ROW][:].astype(np.int64), g[VIEW][:].astype(np.int32), read_locations(g), attrs)
        except (KeyError, OSError, ValueError) as exc:
            raise damaged(path, exc) from None


def _write_locations(h5, loc: Locations, folder: str) -> None:
    """``shards`` and ``features`` of a group (the file, or ``/augmented``): a virtual dataset with one
    mapping per run of consecutive shard rows."""
    g = h5.create_group(SHARDS)
    _write_shard_files(g, loc)
    g.create_dataset(INDEX, data=np.asarray(loc.index, dtype=np.int32))
    g.create_dataset(ROW, data=np.asarray(loc.row, dtype=np.int64))
    runs = [[a, b, int(loc.index[a]), int(loc.row[a])] for a, b in _runs(loc.index, loc.row)]
    _virtual_features(h5, len(loc.index), loc, runs, folder)


def _write_shard_files(group, loc: Locations) -> None:
    group.attrs[DIM] = loc.dim
    write_strings(group, "file", loc.files)
    group.create_dataset("rows", data=np.asarray(loc.file_rows, dtype=np.int64).reshape(len(loc.files)))
    group.create_dataset("bytes", data=np.asarray(loc.file_bytes, dtype=np.int64).reshape(len(loc.files)))


def _virtual_features(h5, n: int, loc: Locations, runs, folder: str) -> None:
    """``features`` of ``n`` rows over the shard files of ``loc`` in ``folder``: ``runs`` are [first row,
    stop, shard, its first row] of the rows that lie one after another in a shard."""
    import h5py

    if not n:
        h5.create_dataset(FEATURES, shape=(0, loc.dim), dtype=np.float32)
        return
    layout = h5py.VirtualLayout(shape=(n, loc.dim), dtype=np.float32)
    sources = [
        h5py.VirtualSource(f"{folder}/{name}", FEATURES, shape=(rows, loc.dim))
        for name, rows in zip(loc.files, loc.file_rows)
    ]
    for start, stop, shard, first in runs:
        layout[start:stop] = sources[shard][first : first + stop - start]
    h5.create_virtual_dataset(FEATURES, layout, fillvalue=np.nan)


def _runs(index: np.ndarray, row: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) ranges of rows that lie one after another in one shard."""
    n = len(index)
    if not n:
        return []
    breaks = np.flatnonzero((np.diff(index) != 0) | (np.diff(row) != 1)) + 1
    bounds = np.concatenate([[0], breaks, [n]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def write_strings(group, name, values) -> None:
    values = values if isinstance(values, np.ndarray) else list(values)
    data = np.asarray([encode_name(v) for v in values], dtype=object).reshape(len(values))
    group.create_dataset(name, data=data, dtype=_str_dtype(), shape=(len(values),))


def write_error(path: Path, exc: Exception) -> CacheError:
    """A failed write as a one-line error; what was committed before stays intact."""
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc) or "errno = 28" in str(exc):
        return CacheError(
            f"no space left on the device while writing {path}; free some space and rerun the same "
            f"command (work committed before is kept)"
        )
    return CacheError(f"could not write {path} ({_short(exc)}); check the folder and rerun the same command")


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file and flush it to the disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_features(path: Path, indices) -> np.ndarray:
    """Vectors of the rows ``indices`` (any order, repeats allowed), float32 (len(indices), dim).

    Reads only those rows, so checking a few rows of a large cache stays cheap.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    with open_h5(path, chunk_cache=True) as h5:
        data = h5[FEATURES]
        if not len(idx):
            return np.zeros((0, data.shape[1]), dtype=np.float32)
        if idx.min() < 0 or idx.max() >= data.shape[0]:
            raise CacheError(f"{path} has {data.shape[0]} rows; row {int(idx.max())} does not exist")
        unique, inverse = np.unique(idx, return_inverse=True)
        block = data[unique]  # h5py reads increasing indices only
    return np.asarray(block[inverse], dtype=np.float32)
