"""A folder's entries and its files' sizes and times, a whole folder in one call of compiled code.

Listing and stat-ing every file is what an update of a large cache costs beside its new images: in
Python each name and each stat is an object, and ``os.stat`` takes about 1.7 µs where the system call
takes 1.1 (200,000 files on 2 cores). The extension ``_fsscan`` (``_fsscan.c``, built by ``pip install``
where a C compiler is at hand) does a folder at a time with the interpreter lock released, so that
threads list and stat in parallel with each other and with the rest of the update. Where it was not
built, :data:`native` is None and :mod:`featcache.extraction.dataset` and
:mod:`featcache.extraction.filestat` do the same in Python (scandir, and helper processes).
"""

from __future__ import annotations

import itertools
import os

import numpy as np

try:
    from featcache.extraction import _fsscan as native
except ImportError:  # not built: the Python paths do the work
    native = None

#: what :func:`entries` calls each kind of entry (symlinks not followed)
FILE, FOLDER, SYMLINK, OTHER = b"f", b"d", b"l", b"o"
#: directory entries held at once as objects by the Python listing
LIST_ROWS = 4096


def entries(folder: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The names of ``folder``'s entries (bytes (k,), in the file system's order, "." and ".." left out) and
    the kind of each (bytes (k,): FILE, FOLDER, SYMLINK or OTHER). OSError when it cannot be listed."""
    if native is None:
        return _entries_here(folder)
    names, width, kinds = native.list_names(folder)
    return np.frombuffer(names, dtype=f"S{width}"), np.frombuffer(kinds, dtype="S1")


def stat_names(folder: bytes, names: np.ndarray) -> np.ndarray:
    """Size and mtime in ns of each of ``names`` (bytes (k,)) in ``folder``, int64 (k, 2); -1 and the errno where
    a file cannot be stat-ed. Symlinks are followed."""
    names = np.ascontiguousarray(names)
    table = np.empty((len(names), 2), dtype=np.int64)
    if not len(names):
        return table
    if native is None:
        return _stat_here(folder, names.tolist(), table)
    native.stat_names(folder, names, names.dtype.itemsize, table)
    return table


def names_array(names: list[bytes]) -> np.ndarray:
    """``names`` as fixed-width bytes (k,)."""
    return np.array(names, dtype=bytes) if names else np.zeros(0, dtype="S1")


def _entries_here(folder: bytes) -> tuple[np.ndarray, np.ndarray]:
    names, kinds = [np.zeros(0, dtype="S1")], [np.zeros(0, dtype="S1")]
    with os.scandir(folder) as listing:
        while block := list(itertools.islice(listing, LIST_ROWS)):  # a block of entries held at a time
            names.append(names_array([entry.name for entry in block]))
            kinds.append(np.array([_kind(entry) for entry in block], dtype="S1"))
    return np.concatenate(names), np.concatenate(kinds)


def _kind(entry: os.DirEntry) -> bytes:
    if entry.is_symlink():
        return SYMLINK
    if entry.is_file(follow_symlinks=False):
        return FILE
    return FOLDER if entry.is_dir(follow_symlinks=False) else OTHER


def _stat_here(folder: bytes, names: list[bytes], table: np.ndarray) -> np.ndarray:
    """Each name stat-ed relative to the open folder where the system allows it (the kernel then resolves one
    name, not the whole path again), else by full path."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY) if os.stat in os.supports_dir_fd else None
    except OSError as exc:
        table[:, 0], table[:, 1] = -1, exc.errno or 0
        return table
    try:
        for i, name in enumerate(names):
            try:
                st = os.stat(name, dir_fd=fd) if fd is not None else os.stat(os.path.join(folder, name))
            except OSError as exc:
                table[i] = (-1, exc.errno or 0)
                continue
            table[i] = (st.st_size, st.st_mtime_ns)
    finally:
        if fd is not None:
            os.close(fd)
    return table
