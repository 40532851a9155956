"""fsscan.py: a folder's entries as os.scandir sees them and its files' stats as os.stat gives them, compiled or
not; the compiled scan is built wherever a C compiler is at hand."""

from __future__ import annotations

import errno
import os
import shutil
import sysconfig

import numpy as np
import pytest

from featcache.extraction import fsscan
from tests.support import os_stats


def _odd_folder(tmp_path):
    """Files, a hidden one, a name that is not UTF-8, a folder, symlinks (to a file, a folder, nowhere), a fifo."""
    folder = tmp_path / "f"
    folder.mkdir()
    for name in (b"a.jpg", b".hidden.png", b"\xff\xfe.png", b"long_" + b"x" * 200 + b".png"):
        with open(os.path.join(os.fsencode(folder), name), "wb") as out:
            out.write(b"pixels" * len(name))
    (folder / "sub").mkdir()
    (folder / "to_file.jpg").symlink_to(folder / "a.jpg")
    (folder / "to_folder").symlink_to(folder / "sub")
    (folder / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(folder / "pipe.jpg")
    return os.fsencode(folder)


def _scandir_kinds(folder: bytes) -> dict[bytes, bytes]:
    """The kind of each entry, as os.scandir tells it (symlinks not followed)."""
    kinds = {}
    for entry in os.scandir(folder):
        if entry.is_symlink():
            kinds[entry.name] = b"l"
        elif entry.is_file(follow_symlinks=False):
            kinds[entry.name] = b"f"
        else:
            kinds[entry.name] = b"d" if entry.is_dir(follow_symlinks=False) else b"o"
    return kinds


def test_entries_are_those_scandir_sees(tmp_path, scan_way):
    folder = _odd_folder(tmp_path)
    names, kinds = fsscan.entries(folder)
    assert names.dtype.kind == "S" and len(names) == len(kinds)
    assert dict(zip(names.tolist(), kinds.tolist())) == _scandir_kinds(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [len(part) for part in fsscan.entries(os.fsencode(empty))] == [0, 0]


@pytest.mark.parametrize("target", ["missing", "a file"])
def test_a_folder_that_cannot_be_listed_is_an_os_error(tmp_path, scan_way, target):
    path = tmp_path / "x"
    if target == "a file":
        path.write_bytes(b"")
    with pytest.raises(OSError) as raised:
        fsscan.entries(os.fsencode(path))
    assert raised.value.errno == (errno.ENOENT if target == "missing" else errno.ENOTDIR)


def test_stats_are_those_os_stat_gives(tmp_path, scan_way):
    folder = _odd_folder(tmp_path)
    names = np.array([*sorted(os.listdir(folder)), b"gone.jpg"], dtype=bytes)
    table = fsscan.stat_names(folder, names)
    expected = os_stats([(folder, names.tolist())])
    assert table.dtype == np.int64 and [tuple(row) for row in table.tolist()] == expected
    assert (-1, errno.ENOENT) in expected and len(set(expected)) > 4  # the broken symlink and the name gone
    missing = fsscan.stat_names(os.fsencode(tmp_path / "nope"), np.array([b"a", b"bb"]))
    assert missing.tolist() == [[-1, errno.ENOENT], [-1, errno.ENOENT]]
    assert fsscan.stat_names(folder, np.zeros(0, dtype="S1")).shape == (0, 2)


def test_the_compiled_scan_is_built_where_a_compiler_is_at_hand():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): featcache lists and stats files in Python")
    assert fsscan.native is not None, "run pip install -e . again to build featcache/extraction/_fsscan.c"
