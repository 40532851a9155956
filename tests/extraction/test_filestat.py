"""filestat.py: sizes and times as os.stat gives them, errors per file, by threads of the compiled scan or by
helper processes or not, stopped."""

from __future__ import annotations

import errno
import os
import sys

import pytest

from featcache.extraction import filestat
from featcache.extraction.filestat import FileStats, StatStream, reason
from tests.support import os_stats, write_image


def _folders(tmp_path, per_folder=(7, 5, 9)):
    """Folders of images, a symlink to a file elsewhere, a name that is gone and a folder that is gone."""
    write_image(tmp_path / "elsewhere.jpg", (10, 200, 10), 9)
    folders = []
    for k, count in enumerate(per_folder):
        folder = tmp_path / f"class_{k}"
        names = []
        for i in range(count):
            write_image(folder / f"img_{i}.jpg", (20 * i, 10, 10), i)
            names.append(f"img_{i}.jpg".encode())
        (folder / "link.jpg").symlink_to(tmp_path / "elsewhere.jpg")
        folders.append((os.fsencode(folder), [*names, b"gone.jpg", b"link.jpg"]))
    folders.append((os.fsencode(tmp_path / "no-such-folder"), [b"a.jpg", b"b.jpg"]))
    return folders


@pytest.mark.parametrize("helpers", [False, True])
def test_sizes_and_times_match_os_stat_with_or_without_helper_processes(tmp_path, monkeypatch, helpers, scan_way):
    folders = _folders(tmp_path)
    if helpers:
        monkeypatch.setattr(filestat, "PARALLEL_MIN", 1)
        monkeypatch.setattr(filestat.os, "cpu_count", lambda: 3)  # 3 helpers, shares cut inside folders
    with FileStats.start(folders) as stats:
        size, mtime = stats.result()
    assert list(zip(size.tolist(), mtime.tolist())) == os_stats(folders)
    assert sum(size < 0) == 3 + 2  # a gone name per folder, two names of the missing folder
    assert (size[size >= 0] > 0).all()
    assert reason(errno.ENOENT) == "cannot read file: No such file or directory"


@pytest.mark.parametrize("executable", ["/no/such/python", "/bin/false"])
@pytest.mark.usefixtures("python_scan")
def test_a_helper_that_cannot_start_or_fails_leaves_its_share_to_this_process(tmp_path, monkeypatch, executable):
    folders = _folders(tmp_path, (30, 30))
    monkeypatch.setattr(filestat, "PARALLEL_MIN", 1)
    monkeypatch.setattr(filestat.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sys, "executable", executable)
    with FileStats.start(folders) as stats:
        size, mtime = stats.result()
    assert list(zip(size.tolist(), mtime.tolist())) == os_stats(folders)


def test_shares_are_consecutive_and_even():
    pieces = [(b"/a", [b"1", b"2", b"3", b"4", b"5"]), (b"/b", [b"6"]), (b"/c", [b"7", b"8"])]
    shares = list(filestat._shares(iter(pieces), 8, 3))
    assert [(share.pieces(), share.count) for share in shares] == [
        ([(b"/a", [b"1", b"2", b"3"])], 3),
        ([(b"/a", [b"4", b"5"]), (b"/b", [b"6"])], 3),
        ([(b"/c", [b"7", b"8"])], 2),
    ]
    assert FileStats.start([]).result()[0].shape == (0,)


@pytest.mark.usefixtures("python_scan")
def test_helpers_whose_result_is_not_wanted_are_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(filestat, "PARALLEL_MIN", 1)
    with FileStats.start(_folders(tmp_path, (40, 40))) as stats:
        processes = [helper.process for helper, _ in stats._helpers]
        assert processes and all(p.poll() is None or p.returncode == 0 for p in processes)
    assert all(p.returncode is not None for p in processes)  # ended and reaped: no process left behind


@pytest.mark.parametrize("output", ["printf abc", "head -c 100000 /dev/zero"])
@pytest.mark.usefixtures("python_scan")
def test_a_helper_that_answers_too_little_or_too_much_leaves_its_share_to_this_process(tmp_path, monkeypatch, output):
    folders = _folders(tmp_path, (30, 30))
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\ncat > /dev/null\n{output}\n")  # reads its share, exits 0, answers wrong
    fake.chmod(0o755)
    monkeypatch.setattr(filestat, "PARALLEL_MIN", 1)
    monkeypatch.setattr(filestat.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sys, "executable", str(fake))
    with FileStats.start(folders) as stats:
        size, mtime = stats.result()
    assert list(zip(size.tolist(), mtime.tolist())) == os_stats(folders)


def _streamed(folders, piece: int = 4, parallel_min: int = 0):
    """The stats of ``folders`` submitted a few names at a time and taken two pieces behind."""
    import numpy as np

    sizes, times, waiting = [], [], 0
    with StatStream(parallel_min) as stats:
        for folder, names in folders:
            for start in range(0, len(names), piece):
                stats.submit(folder, np.array(names[start : start + piece], dtype=bytes))
                waiting += 1
                if waiting > 2:
                    size, mtime = stats.take()
                    sizes += size.tolist()
                    times += mtime.tolist()
                    waiting -= 1
        for _ in range(waiting):
            size, mtime = stats.take()
            sizes += size.tolist()
            times += mtime.tolist()
        helpers = [helper.process for helper in stats._helpers or []]
    return list(zip(sizes, times)), helpers


@pytest.mark.parametrize("parallel_min", [0, 10, 10**9])
def test_a_stream_of_pieces_is_stat_ed_as_os_stat_says(tmp_path, monkeypatch, parallel_min, scan_way):
    monkeypatch.setattr(filestat.os, "cpu_count", lambda: 2)
    folders = _folders(tmp_path)
    found, helpers = _streamed(folders, parallel_min=parallel_min)
    assert found == os_stats(folders)
    # helpers only without the compiled scan (its threads stat), past the first names
    assert bool(helpers) == (scan_way == "python" and parallel_min < 10**9)
    assert all(p.returncode is not None for p in helpers)  # ended and reaped at close


@pytest.mark.parametrize("program", ["", "printf abc", "head -c 100000 /dev/zero", "exit 1"])
@pytest.mark.usefixtures("python_scan")
def test_a_stream_helper_that_fails_or_answers_wrong_leaves_its_pieces_to_this_process(tmp_path, monkeypatch, program):
    folders = _folders(tmp_path, (30, 30))
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\n{program}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(filestat.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sys, "executable", str(fake) if program else "/no/such/python")
    found, _ = _streamed(folders)
    assert found == os_stats(folders)
