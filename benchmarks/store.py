"""Extract from an S3-compatible store on loopback against the same files on disk, and the driver's serial cost.

    python -m benchmarks.store [--per-class 60] [--repeats 3] [--objects 1000000] [--listed 5000]

1. **Images/s.** ``--per-class`` images of each class of the clothing train split are copied to a work
   folder and uploaded to moto's S3 server on 127.0.0.1 (a real HTTP server, ``python -m moto.server``;
   every object read is a GET over loopback). ``featcache.api.extract`` (local engine, in process,
   each run into a fresh cache) reads them from disk and from ``s3://`` (with the default 2 decoding
   threads, and with 8), taking turns ``--repeats`` times: with the real Xception at 150 px
   (compute-bound: what a user sees), and with a 2048-d fake backbone (read-bound: listing, GETs,
   hashing, decoding and the commits, no forward pass).
2. **Serial at the driver per million objects.** A synthetic listing of ``--objects`` entries (the dicts
   an s3fs ``find(detail=True)`` returns, built in memory, so no store is timed) is turned into the
   dataset (:func:`featcache.extraction.dataset.scan`: sorting, layout, size and ETag columns) and
   matched against a cache holding every object (``run._listing``: the diff of an update that finds
   nothing changed). Both run in one thread of this process.
3. **Listing over the wire.** ``--listed`` empty objects in moto, listed by s3fs ``find``: seconds per
   1,000 objects (one ListObjectsV2 page each), what a real store adds per page at its own latency.
4. **A local folder through fsspec?** ``--files`` empty files listed and stat-ed as stage one does
   (``os``) and by fsspec's local filesystem, and the import of fsspec in a fresh process.

Figures are medians with min-max over the repeats; the CPU is lscpu's model name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from benchmarks.fake_extract import FakeBackbone
from featcache.extraction.store import ObjectStore
from featcache.versions import cpu_name
from tests.extraction.s3_server import MotoServer, client, store_environment, upload
from tests.support import REAL_DATA, REAL_WEIGHTS


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f}  ({min(values):.1f}-{max(values):.1f})"


def _subset(root: Path, per_class: int) -> Path:
    """The first ``per_class`` images (by name) of each class of the clothing train split, copied under ``root``."""
    for folder in sorted((REAL_DATA / "train").iterdir()):
        for image in sorted(folder.iterdir())[:per_class]:
            target = root / "train" / folder.name / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, target)
    return root


def _rate(source, out: Path, backbone, workers: int) -> tuple[float, float]:
    """(images per second of the whole extract, images per second while computing) of one fresh run."""
    from featcache.api import extract

    if out.exists():
        out.unlink()
    shutil.rmtree(out.with_name(out.name + ".shards"), ignore_errors=True)
    options = {"weights": str(REAL_WEIGHTS), "image_size": 150} if backbone is None else {"backbone": backbone}
    start = time.perf_counter()
    result = extract(source, out, val_fraction=0.0, test_fraction=0.0, workers=workers, **options)
    return result.computed / (time.perf_counter() - start), result.images_per_s


def images_per_s(work: Path, endpoint: str, per_class: int, repeats: int) -> None:
    data = _subset(work / "data", per_class)
    url = upload(endpoint, data, "clothing", "train-subset/")
    count = sum(1 for p in data.rglob("*") if p.is_file())
    print(f"\n1. images/s, local engine, {count} images of the clothing train split, disk vs {url} on loopback")
    for name, backbone in (("Xception 150 px", None), ("fake 2048-d (read-bound)", FakeBackbone())):
        runs: dict[str, list[tuple[float, float]]] = {"disk": [], "s3": [], "s3 --workers 8": []}
        for _ in range(repeats):
            for where, source, workers in (("disk", data, 2), ("s3", url, 2), ("s3 --workers 8", url, 8)):
                runs[where].append(_rate(source, work / f"{where[:2]}.h5", backbone, workers))
        for where, got in runs.items():
            whole, computing = [g[0] for g in got], [g[1] for g in got]
            print(f"  {name:<26} {where:<15} whole run {_spread(whole)}   while computing {_spread(computing)}")


def _synthetic_listing(n: int, classes: int = 10) -> dict[str, dict]:
    """What s3fs's ``find(detail=True)`` returns for ``n`` objects under ``bucket/photos/train/<class>/``."""
    found = {}
    for i in range(n):
        name = f"bucket/photos/train/class{i % classes:02d}/{i:09d}.jpg"
        etag = hashlib.md5(name.encode()).hexdigest()
        found[name] = {"name": name, "size": 20_000 + i % 997, "ETag": f'"{etag}"', "type": "file"}
    return found


class _Listed:
    """Stands in for :class:`featcache.extraction.store.ObjectStore` with a listing held in memory."""

    found: dict = {}

    def __init__(self, url: str):
        self.inner = ObjectStore.__new__(ObjectStore)
        self.inner.url, self.inner.root = url, "bucket/photos"
        self.inner.fs = type("Fs", (), {"find": lambda _, root, detail, withdirs: _Listed.found})()

    def listing(self):
        return self.inner.listing()


def driver_serial(objects: int, repeats: int) -> None:
    from featcache.cache.layout import Rows
    from featcache.extraction import dataset as dataset_module
    from featcache.extraction import run, store

    _Listed.found = _synthetic_listing(objects)
    scan_s, diff_s = [], []
    for _ in range(repeats):
        with _patched(store, "ObjectStore", _Listed):
            start = time.perf_counter()
            listed = dataset_module.scan("s3://bucket/photos")
            scan_s.append(time.perf_counter() - start)
        size, stamps = listed.listed
        n = len(listed)
        stored = Rows(listed.paths, np.full(n, b"0" * 64, dtype="S64"), listed.labels, listed.splits, size, stamps)
        start = time.perf_counter()
        listing, _ = run._listing(listed, stored, np.ones(n, dtype=bool), False)
        diff_s.append(time.perf_counter() - start)
        assert (listing.reused_row >= 0).all()
    per_million = 1e6 / objects
    print(f"\n2. serial at the driver, synthetic listing of {objects:,} objects, per million objects (s)")
    print(f"  listing to dataset (sort, layout, sizes, ETags) {_spread([s * per_million for s in scan_s])}")
    print(f"  diff against a cache holding every object       {_spread([s * per_million for s in diff_s])}")


@contextlib.contextmanager
def _patched(module, name: str, value):
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


def wire_listing(endpoint: str, listed: int, repeats: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    s3 = client(endpoint)
    s3.create_bucket(Bucket="listing")
    with ThreadPoolExecutor(8) as pool:
        keys = [f"photos/train/c{i % 10}/{i:07d}.jpg" for i in range(listed)]
        list(pool.map(lambda k: s3.put_object(Bucket="listing", Key=k, Body=b""), keys))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        paths, _, _ = ObjectStore("s3://listing/photos").listing()
        seconds.append(time.perf_counter() - start)
        assert len(paths) == listed
    per_page = [s * 1000 / listed for s in seconds]
    print(f"\n3. listing {listed:,} objects from moto on loopback through s3fs: s per 1,000 objects (one page)")
    print(f"  {_spread(per_page)}   = {statistics.median(per_page) * 1000:.0f} s per million objects")


def local_folder(files: int, repeats: int) -> None:
    """A local folder read as stage one reads it (``os.scandir``, one ``os.stat`` a file) against fsspec's local
    filesystem (``find(detail=True)``), and what importing fsspec adds to a process."""
    import subprocess
    import sys

    from fsspec.implementations.local import LocalFileSystem

    from featcache.extraction.dataset import scan, stat_files

    root = Path(tempfile.mkdtemp(prefix="fclocal"))
    try:
        for i in range(files):
            folder = root / "train" / f"class{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:08d}.jpg").write_bytes(b"x")
        by_os, by_fsspec, imports = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            found = scan(root)
            stat_files(root, found.paths)
            by_os.append(time.perf_counter() - start)
            start = time.perf_counter()
            listed = LocalFileSystem().find(str(root), detail=True)
            by_fsspec.append(time.perf_counter() - start)
            assert len(listed) == len(found) == files
            timed = [sys.executable, "-c", "import time; t = time.perf_counter(); import fsspec.implementations.local; "
                     "print(time.perf_counter() - t)"]  # fmt: skip
            imports.append(float(subprocess.run(timed, capture_output=True, text=True, check=True).stdout))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n4. a local folder of {files:,} files, listed and stat-ed, in process (ms)")
    print(f"  os.scandir + os.stat (featcache)   {_spread([s * 1000 for s in by_os])}")
    print(f"  fsspec LocalFileSystem.find(detail) {_spread([s * 1000 for s in by_fsspec])}")
    print(f"  importing fsspec in a fresh process {_spread([s * 1000 for s in imports])}")


@click.command()
@click.option("--per-class", default=60, show_default=True, help="Images of each train class to extract.")
@click.option("--repeats", default=3, show_default=True, help="Runs of each measurement, taking turns.")
@click.option("--objects", default=1_000_000, show_default=True, help="Objects in the synthetic listing.")
@click.option("--files", default=100_000, show_default=True, help="Files in the local folder of part 4.")
@click.option("--listed", default=5000, show_default=True, help="Objects put in moto and listed over loopback.")
def main(per_class: int, repeats: int, objects: int, files: int, listed: int) -> None:
    """Extract from S3 on loopback vs disk, and the driver's serial cost per million objects."""
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; figures: median (min-max) of {repeats}")
    server = MotoServer().start()
    work = Path(tempfile.mkdtemp(prefix="fcstore"))
    try:
        os.environ.update(store_environment(server.endpoint))
        images_per_s(work, server.endpoint, per_class, repeats)
        driver_serial(objects, repeats)
        wire_listing(server.endpoint, listed, repeats)
        local_folder(files, repeats)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
