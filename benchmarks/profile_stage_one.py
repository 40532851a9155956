"""Where stage one's CPU time goes: reading + hashing, decoding, and the forward pass, per image.

    python -m benchmarks.profile_stage_one [--images 320]

Prints CPU milliseconds per image of each step (one thread, page cache warm) and how much of
the two cores the bare forward pass keeps busy: the idle share is what decoding can fill
without slowing the model down.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import click
import numpy as np

from benchmarks import workloads as w
from benchmarks.bench import _default_data, _default_weights
from featcache.images import PreprocessSpec, decode_image


def cpu_ms_per_item(func, items) -> float:
    start = time.process_time()
    for item in items:
        func(item)
    return (time.process_time() - start) / len(items) * 1e3


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=_default_data)
@click.option("--weights", default=_default_weights)
@click.option("--images", type=int, default=320, show_default=True, help="Train images profiled.")
@click.option("--batch-size", type=int, default=32, show_default=True)
def main(data, weights, images, batch_size):
    """Profile reading, hashing, decoding and the forward pass of featcache extract."""
    from featcache.backbones.xception import XceptionBackbone

    files = w.image_files(data, ("train",))
    files = files[:: max(1, len(files) // images)][:images]
    spec = PreprocessSpec()
    blobs = [f.read_bytes() for f in files]  # warms the page cache too
    read_ms = cpu_ms_per_item(lambda f: f.read_bytes(), files)
    hash_ms = cpu_ms_per_item(lambda b: hashlib.sha256(b).hexdigest(), blobs)
    decode_ms = cpu_ms_per_item(lambda b: decode_image(b, spec), blobs)
    pixels = np.stack([decode_image(b, spec) for b in blobs])
    embed = XceptionBackbone(weights, spec.image_size).build()
    embed(pixels[:batch_size])
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        embed(pixels[i : i + batch_size])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    cores, forward_ms = os.cpu_count() or 1, cpu / len(pixels) * 1e3
    rows = [
        ("read file, CPU ms/image", read_ms),
        ("sha256 of the bytes, CPU ms/image", hash_ms),
        ("decode + resize (Pillow, nearest), CPU ms/image", decode_ms),
        ("forward pass, CPU ms/image (all threads)", forward_ms),
        ("forward pass, images/s", len(pixels) / wall),
        (f"share of the {cores} cores busy during the forward pass", cpu / wall / cores),
        ("read + hash + decode as a share of the forward pass's CPU", (read_ms + hash_ms + decode_ms) / forward_ms),
    ]
    for name, value in rows:
        click.echo(f"{name:<62} {value:8.3f}")


if __name__ == "__main__":
    main()
