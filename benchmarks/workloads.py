"""The timed workloads of the benchmark: bare forward passes, the Keras pipeline, featcache runs, processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.images import PreprocessSpec

SPLITS = ("train", "validation", "test")
#: featcache's default resize filter, given to Keras too so that both pipelines do the same work
INTERPOLATION = PreprocessSpec().interpolation


@dataclass
class Timed:
    """Wall seconds of one workload and the images it went through."""

    seconds: float
    images: int

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class OthersMeter:
    """The share of all cores that other processes used while the block ran (Linux; None elsewhere).

    A busy machine slows any workload; this says how much each measurement was disturbed.
    """

    share: float | None = None

    def __enter__(self) -> OthersMeter:
        self._busy, self._own, self._start = _busy_seconds(), _own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._start
        busy = _busy_seconds()
        if busy is not None and self._busy is not None and wall > 0:
            others = busy - self._busy - (_own_cpu_seconds() - self._own)
            self.share = round(max(0.0, others / ((os.cpu_count() or 1) * wall)), 3)


def _busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Prebuilt:
    """A backbone whose embedding function is already built and warm, so a run times the pipeline only.

    ``embed_seconds`` adds up the time spent inside forward passes: the rest of a run is what
    the pipeline (scan, hashing, waiting for decodes, writes, the final cache) costs on top.
    """

    def __init__(self, backbone, embed):
        self.backbone, self._embed = backbone, embed
        self.embed_seconds = 0.0
        self._identity = backbone.identity()  # hashes the weights file: start-up, like building the model

    def identity(self) -> dict:
        return self._identity

    def build(self):
        def timed(batch):
            start = time.perf_counter()
            try:
                return self._embed(batch)
            finally:
                self.embed_seconds += time.perf_counter() - start

        return timed


def image_files(data: Path, splits=SPLITS) -> list[Path]:
    """Image files of ``splits`` under ``data``, in a stable order."""
    return sorted(p for s in splits for p in (data / s).rglob("*") if p.is_file() and not p.name.startswith("."))


def plain_model(weights: str):
    """Xception + GAP built by plain Keras code with ``weights`` (the bare script's model, no featcache code)."""
    from benchmarks.bare_script import build_model

    return build_model(weights)


def plain_predict(model):
    """A function from uint8 pixels (n, s, s, 3) to vectors: ``preprocess_input`` then ``predict_on_batch``."""
    from keras.applications.xception import preprocess_input

    return lambda batch: model.predict_on_batch(preprocess_input(batch.astype(np.float32)))


def decode_plain(files: list[Path]) -> np.ndarray:
    """uint8 (n, 150, 150, 3) pixels of ``files``, decoded by Keras' ``load_img`` (nearest) as the bare script does."""
    from benchmarks.bare_script import load_batch

    return np.concatenate([load_batch(files[i : i + 256]).astype(np.uint8) for i in range(0, len(files), 256)])


def bare_forward(embed, pixels: np.ndarray, batch_size: int) -> Timed:
    """Batched forward passes over pre-decoded pixels (after one warm-up batch), nothing else."""
    embed(pixels[:batch_size])
    start = time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        embed(pixels[i : i + batch_size])
    return Timed(time.perf_counter() - start, len(pixels))


def keras_dataset(folder: Path, image_size: int, batch_size: int):
    """``image_dataset_from_directory`` (nearest) -> ``preprocess_input`` -> prefetch, over a folder of class folders.

    Building it lists the files only; the images are read and decoded while it is iterated.
    """
    import keras
    import tensorflow as tf

    preprocess = keras.applications.xception.preprocess_input
    ds = keras.utils.image_dataset_from_directory(
        folder,
        image_size=(image_size, image_size),
        batch_size=batch_size,
        interpolation=INTERPOLATION,
        shuffle=False,
        verbose=False,
    )
    ds = ds.map(lambda x, y: preprocess(tf.cast(x, tf.float32)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def keras_predict(model, dataset) -> Timed:
    """``model.predict`` over a built dataset: reading, decoding and forward passes, as tf.data overlaps them."""
    start = time.perf_counter()
    images = len(model.predict(dataset, verbose=0))
    return Timed(time.perf_counter() - start, images)


def first_images_folder(subset: Path, folder: Path, n: int) -> Path:
    """A folder of class folders with hard links to the first ``n`` images of ``subset`` (in ``image_files`` order)."""
    for path in image_files(subset, (".",))[:n]:
        target = folder / path.parent.name / path.name
        if not target.exists():
            _link(path, target)
    return folder


def interleaved_subsets(data: Path, folder: Path, count: int) -> list[Path]:
    """Split every image of ``data`` into ``count`` disjoint folders of class folders (hard links).

    Image i goes to subset i % count in a stable order, so each subset has every class and split.
    """
    subsets = [folder / f"subset-{i}" for i in range(count)]
    for i, path in enumerate(image_files(data)):
        split, label = path.relative_to(data).parts[:2]
        _link(path, subsets[i % count] / label / f"{split}-{path.name}")
    return subsets


def _link(path: Path, target: Path) -> None:
    """Hard-link ``path`` as ``target`` (copy it across filesystems), creating the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(path, target)
    except OSError:  # another filesystem: copy
        shutil.copy2(path, target)


def featcache_extract(data: Path, output: Path, backbone, weights: str, precision: str, runtime: str, batch_size: int):
    """``featcache.extract`` in this process with a warm backbone: scan, hash, decode, embed, write, assemble.

    Returns (Timed, ExtractResult).
    """
    from featcache.api import extract

    start = time.perf_counter()
    result = extract(
        data,
        output,
        weights=weights,
        precision=precision,
        runtime=runtime,
        batch_size=batch_size,
        backbone=backbone,
        overwrite=True,
    )
    return Timed(time.perf_counter() - start, result.computed), result


@dataclass
class Process:
    """A finished command: wall seconds, its own peak resident memory, exit code and output."""

    seconds: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_process(args: list[str], workdir: Path, env: dict | None = None) -> Process:
    """Run ``args`` to the end; the peak RSS is the child's own, read by ``wait4`` when reaping it."""
    import tempfile

    with tempfile.TemporaryFile("w+", dir=workdir) as out, tempfile.TemporaryFile("w+", dir=workdir) as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0), err.seek(0)
        return Process(seconds, usage.ru_maxrss / 1024, proc.returncode, out.read(), err.read())


def featcache_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "featcache", *args]


def module_command(module: str, *args: str) -> list[str]:
    """A benchmark module (``benchmarks.<module>``) run as a process of its own."""
    return [sys.executable, "-m", f"benchmarks.{module}", *args]


def synthetic_images(folder: Path, n: int, seed: int = 0, size=(533, 400)) -> Path:
    """``n`` smooth random JPEGs of ``size`` (default: the clothing images' shape) in two class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        path = folder / f"class_{i % 2}" / f"img_{i:05d}.jpg"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
    return folder


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two float (n, d) arrays."""
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
