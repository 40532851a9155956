"""How fast the files of a listing are stat-ed: one process by full path or by name, threads, helper processes,
the compiled scan.

    python -m benchmarks.filestat                   # 200,000 empty files in 10 folders, 5 rounds
    python -m benchmarks.filestat --files 20000 --rounds 3

The files are made in a work folder on disk (deleted at the end); every way stats the same
names, in the same order, once per round, the ways taking turns within each round. Each figure
is the median of the rounds (min and max beside it), and the ratio to stat-ing by full path in
one process, the way a plain ``os.stat(path)`` loop does it:

- ``full path``: ``os.stat(folder/name)`` for each file, in this process;
- ``by name``: ``os.stat(name, dir_fd=folder)``, what :mod:`featcache.extraction.filestat` does
  in this process without the compiled scan (short listings, or when a helper cannot start);
- ``2 threads by name``: the same in two threads of this process, a folder share each;
- ``helper processes``: :class:`featcache.extraction.filestat.FileStats` past its threshold, one
  helper per core, start-up of the helpers in (what featcache does without the compiled scan);
- ``compiled, 1 thread``: :func:`featcache.extraction.fsscan.stat_names`, a folder at a time, in this
  process (skipped where ``_fsscan`` was not built);
- ``compiled, threads``: :class:`featcache.extraction.filestat.FileStats` with the compiled scan, one
  thread per core (what featcache does).

A second table times listing the same folders as a walk does (entries, image names kept, sorted), in
Python (``os.scandir``) and with the compiled scan.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np

from featcache.extraction import filestat, fsscan
from featcache.extraction.dataset import _list_folder
from featcache.extraction.filestat import FileStats


def make_files(work: Path, files: int, folders: int = 10) -> list[tuple[bytes, list[bytes]]]:
    """``files`` empty files spread over ``folders`` folders of ``work``, as (folder, names) pairs."""
    made = []
    for k in range(folders):
        folder = work / f"class_{k:02d}"
        folder.mkdir(parents=True)
        names = [f"img_{i:07d}.png" for i in range(k, files, folders)]
        for name in names:
            (folder / name).touch()
        made.append((os.fsencode(folder.resolve()), [os.fsencode(name) for name in names]))
    return made


def full_path(folders) -> None:
    for folder, names in folders:
        for name in names:
            os.stat(os.path.join(folder, name))


def by_name(folders) -> None:
    for folder, names in folders:  # what featcache does in Python in this process
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in names:
                os.stat(name, dir_fd=fd)
        finally:
            os.close(fd)


def helpers(folders) -> None:
    saved = filestat.PARALLEL_MIN, fsscan.native
    filestat.PARALLEL_MIN, fsscan.native = 1, None
    try:
        with FileStats.start(folders) as stats:
            stats.result()
    finally:
        filestat.PARALLEL_MIN, fsscan.native = saved


def compiled(folders) -> None:
    for folder, names in folders:
        fsscan.stat_names(folder, np.array(names, dtype=bytes))


def compiled_threads(folders) -> None:
    with FileStats.start(folders) as stats:
        stats.result()


def two_threads(folders) -> None:
    halves = [folders[: len(folders) // 2], folders[len(folders) // 2 :]]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(by_name, halves))


WAYS = {"full path": full_path, "by name": by_name, "2 threads by name": two_threads, "helper processes": helpers}
if fsscan.native is not None:
    WAYS |= {"compiled, 1 thread": compiled, "compiled, threads": compiled_threads}


def list_python(folders) -> None:
    saved, fsscan.native = fsscan.native, None
    try:
        list_compiled(folders)
    finally:
        fsscan.native = saved


def list_compiled(folders) -> None:
    for folder, _ in folders:  # as a walk lists a folder: names, kinds, image names kept and sorted
        _list_folder(folder, b"", None, [])


#: the ways of listing the folders (the reference: the Python listing)
LIST_WAYS = {"list in Python (scandir)": list_python}
if fsscan.native is not None:
    LIST_WAYS["list compiled"] = list_compiled


def measure(folders, rounds: int, ways: dict = WAYS) -> dict[str, list[float]]:
    """Seconds of each way, per round."""
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            way(folders)
            seconds[name].append(time.perf_counter() - start)
    return seconds


@click.command()
@click.option("--files", type=click.IntRange(10), default=200_000, show_default=True, help="Files to stat.")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True, help="Rounds of every way.")
@click.option(
    "--work", type=click.Path(file_okay=False, path_type=Path), default=None, help="Parent of the work folder."
)
def main(files, rounds, work):
    """Time the ways of stat-ing a listing's files side by side."""
    folder = Path(tempfile.mkdtemp(prefix="featcache-filestat-", dir=work))
    try:
        folders = make_files(folder / "files", files)
        seconds = measure(folders, rounds)
        listed = measure(folders, rounds, LIST_WAYS)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    click.echo(f"{files:,} files, {rounds} rounds, {os.cpu_count()} cores")
    _table(seconds, "full path")
    click.echo()
    _table(listed, "list in Python (scandir)")


def _table(seconds: dict[str, list[float]], reference: str) -> None:
    base = statistics.median(seconds[reference])
    click.echo(f"| way | median s | min | max | median / {reference} |")
    click.echo("| --- | ---: | ---: | ---: | ---: |")
    for name, values in seconds.items():
        median = statistics.median(values)
        click.echo(f"| {name} | {median:.3f} | {min(values):.3f} | {max(values):.3f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
