"""What the tests share: tiny synthetic datasets and caches, a fake backbone, heads, and the real data in ../shared."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from featcache.api import extract, train_head
from featcache.cache.layout import Rows, read_cache, write_cache
from featcache.cache.shards import ShardWriter, VectorPool, list_shards, shards_dir

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_DATA = Path(os.environ.get("FEATCACHE_DATA") or SHARED / "data" / "clothing-dataset-small")
REAL_WEIGHTS = Path(os.environ.get("FEATCACHE_WEIGHTS") or SHARED / "weights" / "xception_imagenet_notop.weights.h5")
#: set by CI: without the real data and weights the real-data tests fail instead of skipping
REQUIRE_REAL = os.environ.get("FEATCACHE_REQUIRE_REAL", "") not in ("", "0")

CLASS_COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


class FakeBackbone:
    """Stands in for Xception: 16 colour statistics per image, instant, deterministic."""

    dim = 16

    def __init__(self, tag: str = "fake"):
        self.tag = tag
        self.built = 0

    def identity(self) -> dict:
        return {"backbone": self.tag, "pooling": "none", "weights_id": "none", "feature_dim": self.dim}

    def build(self):
        self.built += 1
        return fake_embed


def fake_embed(batch: np.ndarray) -> np.ndarray:
    x = batch.astype(np.float32) / 255.0
    h, w = x.shape[1] // 2, x.shape[2] // 2
    quads = [x[:, :h, :w], x[:, :h, w:], x[:, h:, :w], x[:, h:, w:]]
    feats = [q.mean(axis=(1, 2)) for q in quads] + [x.std(axis=(1, 2)), x.mean(axis=(1, 2, 3))[:, None]]
    return np.concatenate(feats, axis=1).astype(np.float32)


def write_image(path: Path, colour, seed: int, size: int = 24, fmt: str | None = None) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (size, size + 4, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(path, format=fmt)
    return path


def make_split_dataset(root: Path, counts=None, classes=("cat", "dog"), start_seed: int = 0) -> Path:
    """train/validation/test folders of class folders with small coloured JPEGs and PNGs."""
    counts = counts or {"train": 6, "validation": 2, "test": 2}
    seed = start_seed
    for split, n in counts.items():
        for label in classes:
            for i in range(n):
                seed += 1
                suffix = ".png" if i % 3 == 2 else ".jpg"
                write_image(root / split / label / f"{label}_{i:03d}{suffix}", CLASS_COLOURS[label], seed)
    return root


#: the test being set up, so require_real can check its marker (set by conftest)
RUNNING: list = [None]


def require_real():
    """Skip a real-data test when ../shared is absent, or fail it when FEATCACHE_REQUIRE_REAL is set."""
    item = RUNNING[0]
    if item is not None and item.get_closest_marker("real") is None:
        pytest.fail(f"{item.nodeid} uses the real data but lacks @pytest.mark.real")
    if REAL_DATA.is_dir() and REAL_WEIGHTS.is_file():
        return
    missing = REAL_DATA if not REAL_DATA.is_dir() else REAL_WEIGHTS
    message = f"real data or weights not found: {missing} (FEATCACHE_DATA / FEATCACHE_WEIGHTS)"
    if REQUIRE_REAL:
        pytest.fail(f"{message}, and FEATCACHE_REQUIRE_REAL is set")
    pytest.skip(message)


def write_head(directory: Path, cache_path: Path, epochs: int = 40, seed: int = 0) -> Path:
    """A head folder made by train-head on ``cache_path`` (batches of 64, the best of ``epochs`` epochs)."""
    train_head(cache_path, directory, epochs=epochs, seed=seed, batch_size=64)
    return directory


def tiny_cache(root: Path, counts=None, classes=("cat", "dog"), tag: str = "fake", start_seed: int = 0) -> Path:
    """A cache of small coloured images embedded by the 16-d fake backbone."""
    data = make_split_dataset(root / "data", counts=counts, classes=classes, start_seed=start_seed)
    out = root / "features.h5"
    extract(data, out, backbone=FakeBackbone(tag))
    return out


def handmade_cache(path: Path, labels, splits, class_names, dim: int = 4, seed: int = 0) -> Path:
    """A cache written through the cache module with any labels and splits (extract refuses some of these)."""
    rng = np.random.default_rng(seed)
    rows = Rows()
    vectors = []
    for i, (label, split) in enumerate(zip(labels, splits)):
        vectors.append((rng.normal(size=dim) + 3 * label).astype(np.float32))
        rows.path.append(f"{split}/{class_names[label]}/{i}.jpg")
        rows.sha256.append(hashlib.sha256(f"row-{i}".encode()).hexdigest())
        rows.label.append(int(label))
        rows.split.append(split)
        rows.size.append(100)
        rows.mtime_ns.append(0)
    ShardWriter(shards_dir(path), "handmade").write(rows.sha256, np.stack(vectors).reshape(-1, dim))
    pool = VectorPool()
    pool.add_shards(shards_dir(path), "handmade")
    attrs = {"fingerprint": "handmade", "preprocessing": "{}", "weights": "none", "weights_id": "none"}
    write_cache(
        path, {**attrs, "image_size": 71, "feature_dim": dim}, class_names, rows, pool.locations(rows.sha256), []
    )
    pool.close()
    return path


def interleaved_cache(path: Path, n: int = 240, dim: int = 8, seed: int = 0) -> Path:
    """A cache of ``n`` rows of three classes whose train, validation and test rows interleave, as hash splits do."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n).tolist()
    splits = rng.choice(["train", "validation", "test"], n, p=[0.7, 0.15, 0.15]).tolist()
    return handmade_cache(path, labels, splits, ["a", "b", "c"], dim=dim, seed=seed)


def feature_reads(monkeypatch) -> list[int]:
    """The rows of every read of a cache's ``/features`` from now on, recorded where h5py reads them."""
    reads: list[int] = []
    getitem, array = h5py.Dataset.__getitem__, h5py.Dataset.__array__

    def counted_getitem(self, args, *more, **kwargs):
        out = getitem(self, args, *more, **kwargs)
        if self.name == "/features":
            reads.append(len(out) if np.ndim(out) == 2 else 1)
        return out

    def counted_array(self, *args, **kwargs):
        if self.name == "/features":
            reads.append(self.shape[0])
        return array(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counted_getitem)
    monkeypatch.setattr(h5py.Dataset, "__array__", counted_array)
    return reads


def with_vectors_of(cache: Path, other: Path, out: Path) -> Path:
    """A cache ``out`` with the rows of ``cache`` and the vectors ``other`` holds for the same files."""
    source, donor = read_cache(cache), read_cache(other)
    where = {sha: i for i, sha in enumerate(donor.rows.sha256)}
    shas = list(dict.fromkeys(source.rows.sha256))
    ShardWriter(shards_dir(out), source.fingerprint).write(shas, donor.features[[where[s] for s in shas]])
    pool = VectorPool()
    pool.add_shards(shards_dir(out), source.fingerprint)
    located = pool.locations(source.rows.sha256)
    pool.close()
    write_cache(out, source.attrs, source.class_names, source.rows, located, source.quarantine)
    return out


def shards_in_use(out) -> bool:
    """Every shard beside the cache is one its entry file points at: no garbage, no unfinished work."""
    used = set(read_cache(out, with_vectors=False).locations.files)
    return {s.name for s in list_shards(shards_dir(out))} == used


def extract_command(data: Path, out: Path, *options: str) -> list[str]:
    """``featcache extract`` as a real process: random weights, 71 px, no progress bar, and ``options``."""
    base = ["extract", str(data), "-o", str(out), "--weights", "none", "--image-size", "71", "-q"]
    return [sys.executable, "-m", "featcache", *base, *options]


#: ``python -c`` program: run the module ``argv[4]`` with the arguments after it, as ``python -m`` does, in a
#: process that stops itself (SIGSTOP) the ``argv[3]``-th time the audit event ``argv[1]`` names a path matching
#: the regex ``argv[2]``. Python raises the events (``sys.addaudithook``), so the product needs no hook. The
#: thread that raised the event stops inside it: a SIGSTOP sent to the process might be taken by another
#: thread while this one goes on for a few microseconds, long enough to rename a file.
_STOP_AT = """
import itertools, os, re, runpy, signal, sys, threading

event, pattern, nth, module = sys.argv[1], re.compile(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seen = itertools.count(1)


def stop(name, args):
    if name == event and args and isinstance(args[0], (str, bytes, os.PathLike)):
        if pattern.search(os.fsdecode(args[0])) and next(seen) == nth:
            # sent to this thread, the stop takes it before it returns here; the other threads follow
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


sys.argv = [module, *sys.argv[5:]]
sys.addaudithook(stop)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def kill_at(command: list[str], event: str, path: str, nth: int = 1, timeout: float = 300) -> int:
    """Run ``command`` (``python -m module ...``) and SIGKILL it at the ``nth`` audit event ``event`` whose path
    matches the regex ``path``; the pid it had. Fails the test when the process ends without reaching it.

    Events: ``open`` comes before a file is opened (one being created does not exist yet), ``os.rename``
    before ``os.rename`` or ``os.replace`` renames it (a temporary file is complete), ``import`` names a
    module. The process stops itself inside the event, before the operation it announces, and is killed
    while stopped, so it can neither miss the moment nor run past it.
    """
    python, flag, module, *args = command
    assert flag == "-m", f"kill_at runs python -m commands, not {command}"
    program = [python, "-c", _STOP_AT, event, path, str(nth), module, *args]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(program, stdout=subprocess.DEVNULL, stderr=err)
        deadline, moment = time.monotonic() + timeout, f"{event} event #{nth} naming {path!r}"
        try:
            while True:
                pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"{' '.join(command[2:])} did not reach the {moment} in {timeout} s")
                time.sleep(0.01)
            if os.WIFSTOPPED(status):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return proc.pid
            proc.returncode = os.waitstatus_to_exitcode(status)
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            pytest.fail(f"{' '.join(command[2:])} ended (exit {proc.returncode}) before the {moment}:\n{tail}")
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()


def augmented_cache(root: Path, views: int = 3) -> tuple[Path, Path]:
    """A cache of 24 train, 8 validation and 8 test images with ``views`` augmented views per train
    image (fake backbone), and the same cache without views."""
    data = make_split_dataset(root / "data", counts={"train": 12, "validation": 4, "test": 4})
    extract(data, root / "augmented.h5", backbone=FakeBackbone(), augment=views)
    extract(data, root / "plain.h5", backbone=FakeBackbone())
    return root / "augmented.h5", root / "plain.h5"


def os_stats(folders) -> list[tuple[int, int]]:
    """What os.stat says of each name of (folder, names) pairs, by full path: (size, mtime) or (-1, errno)."""
    found = []
    for folder, names in folders:
        for name in names:
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError as exc:
                found.append((-1, exc.errno))
                continue
            found.append((st.st_size, st.st_mtime_ns))
    return found
