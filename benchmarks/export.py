"""The exported model in its serving runtimes: agreement with predict, accuracy, size, speed, install size.

    python -m benchmarks.export --cache CACHE --head HEAD [--split test] [--batch 32] [--repeats 5]

Needs ``pip install 'featcache[tflite,onnx]'``. Exports HEAD as a SavedModel, as ``.tflite`` with each
``--quantize`` and as ``.onnx`` into a temporary folder (each export runs its own check on the
validation split; the seconds it took are shown). Then, on the images of ``--split`` of CACHE (decoded
once as the cache recorded):

* agreement: the share of images whose top class is the one ``featcache predict`` gives (the
  reference, run on the same files), and the largest probability difference from predict's;
* accuracy against the cache's labels, and file size (for the SavedModel, its folder);
* images/s through the target runtime, called here directly (LiteRT ``Interpreter`` with
  ``num_threads`` = cores, ONNX Runtime ``InferenceSession`` with ``intra_op_num_threads`` = cores),
  next to TensorFlow's (the SavedModel's ``serve`` endpoint, TensorFlow's own threads), on the same
  ``--batch`` of pixels, alternating, ``--repeats`` times after one warm-up call each: median
  [min-max], in this process, preprocessing included (it is inside the model), decoding not;
* install size of each serving environment: the files of the runtime's distribution, numpy and
  Pillow and everything they require, as recorded by the installed packages of this environment
  (their RECORD files), Python itself not counted.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

#: (row name, export format, quantize, file name)
EXPORTS = [
    ("SavedModel (TensorFlow)", "saved_model", "none", "serving"),
    ("tflite", "tflite", "none", "model.tflite"),
    ("tflite dynamic", "tflite", "dynamic", "model-dynamic.tflite"),
    ("tflite float16", "tflite", "float16", "model-float16.tflite"),
    ("onnx", "onnx", "none", "model.onnx"),
]
SERVING_ENVS = {
    "TensorFlow": ["tensorflow", "numpy", "pillow"],
    "LiteRT": ["ai-edge-litert", "numpy", "pillow"],
    "ONNX Runtime": ["onnxruntime", "numpy", "pillow"],
}


def runner(fmt: str, path: Path):
    """A function uint8 pixels (n, s, s, 3) -> probabilities (n, k) through the target runtime."""
    cores = os.cpu_count() or 1
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        serve = Interpreter(model_path=str(path), num_threads=cores).get_signature_runner("serve")
        return lambda x: serve(image=x.astype(np.float32))["output_0"]
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = cores
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x.astype(np.float32)})[0]
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return lambda x: loaded.serve(tf.constant(x, tf.float32)).numpy()


def in_batches(run, pixels: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([np.asarray(run(pixels[i : i + batch])) for i in range(0, len(pixels), batch)])


def rates(run, reference, pixels: np.ndarray, repeats: int) -> tuple[list[float], list[float]]:
    """Images/s of ``run`` and of ``reference`` on the same batch, alternating, after one warm-up each."""
    run(pixels), reference(pixels)
    ours, theirs = [], []
    for _ in range(repeats):
        for fn, out in ((run, ours), (reference, theirs)):
            start = time.perf_counter()
            fn(pixels)
            out.append(len(pixels) / (time.perf_counter() - start))
    return ours, theirs


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def install_mb(roots: list[str]) -> float:
    """MB of the installed files of ``roots`` and all they require (markers of this Python and platform)."""
    from packaging.requirements import Requirement

    seen, todo, total = set(), list(roots), 0
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        total += sum(f.size or 0 for f in dist.files or [])
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return total / 1e6


def reference(cache: Path, head: Path, split: str):
    """The files of ``split``, their labels, and predict's classes and probabilities for them."""
    from featcache.api import predict
    from featcache.cache.layout import read_cache
    from featcache.training.metrics import softmax

    data = read_cache(cache, with_vectors=False)
    rows = data.split_indices(split)
    files = [Path(data.attrs["data_dir"]) / data.rows.path[i] for i in rows]
    labels = np.asarray([data.rows.label[i] for i in rows])
    result = predict(files, head, batch_size=32)
    assert not result.failed, result.failed[0].error
    probs = softmax(np.stack([p.logits for p in result.predictions]))
    return files, labels, probs


@click.command()
@click.option("--cache", type=click.Path(path_type=Path, exists=True), required=True, help="An extracted cache.")
@click.option("--head", type=click.Path(path_type=Path, exists=True), required=True, help="A head trained on it.")
@click.option("--split", default="test", show_default=True, help="The split whose images are classified.")
@click.option("--batch", default=32, show_default=True, help="Images per call of a runtime.")
@click.option("--repeats", default=5, show_default=True, help="Timed calls per runtime.")
def main(cache: Path, head: Path, split: str, batch: int, repeats: int) -> None:
    from featcache.api import export
    from featcache.images import load_image
    from featcache.serving.recipe import Recipe
    from featcache.training.head_files import read_head_metadata
    from featcache.versions import cpu_name, package_version

    load_before = os.getloadavg()[0]
    files, labels, expected = reference(cache, head, split)
    spec = Recipe.from_head(read_head_metadata(head)).spec
    pixels = np.stack([load_image(f, spec) for f in files])
    rows, tf_run = [], None
    with tempfile.TemporaryDirectory() as folder:
        for name, fmt, quantize, file_name in EXPORTS:
            start = time.perf_counter()
            result = export(head, Path(folder) / file_name, format=fmt, quantize=quantize)
            seconds = time.perf_counter() - start
            run = runner(fmt, result.out)
            tf_run = tf_run or run  # the SavedModel comes first
            probs = in_batches(run, pixels, batch)
            ours, theirs = rates(run, tf_run, pixels[:batch], repeats)
            rows.append((name, probs, size_mb(result.out), seconds, ours, theirs))
    click.echo(table(rows, expected, labels, len(files), split, batch, repeats))
    versions = ", ".join(
        f"{p} {package_version(p)}" for p in ("tensorflow", "keras", "ai-edge-litert", "tf2onnx", "onnxruntime")
    )
    load = f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    click.echo(f"\nCPU: {cpu_name()} ({os.cpu_count()} cores, {load}); {versions}")
    click.echo("Command: " + " ".join(shlex.quote(a) for a in ["python", "-m", "benchmarks.export", *sys.argv[1:]]))


def table(rows, expected, labels, n: int, split: str, batch: int, repeats: int) -> str:
    lines = [
        f"{n} images of the {split} split; predict's accuracy {np.mean(expected.argmax(1) == labels):.1%}",
        f"images/s: batch of {batch}, median [min-max] of {repeats} calls, alternating with TensorFlow's",
        "",
        "| model | agrees with predict | max prob diff | accuracy | size MB | export s | runtime images/s "
        "| TensorFlow images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, probs, mb, seconds, ours, theirs in rows:
        agree = np.mean(probs.argmax(1) == expected.argmax(1))
        diff = np.abs(probs - expected).max()
        accuracy = np.mean(probs.argmax(1) == labels)
        lines.append(
            f"| {name} | {agree:.1%} | {diff:.1e} | {accuracy:.1%} | {mb:.1f} | {seconds:.0f} | {spread(ours)} "
            f"| {spread(theirs)} |"
        )
    lines += ["", "| serving environment | install size MB |", "|---|---|"]
    lines += [f"| {name}: {', '.join(roots)} | {install_mb(roots):.0f} |" for name, roots in SERVING_ENVS.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
