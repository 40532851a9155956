"""What featcache pays before its first image: imports, model build, weights hash, first forward, OpenVINO conversion.

    python -m benchmarks.startup --weights FILE [--openvino-cache DIR]

Run by the benchmark in a fresh process, so that nothing is imported, traced or converted yet;
prints one JSON object of wall seconds. ``--openvino-cache`` must be empty for the conversion to
be timed (it is cached there for later runs).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
import numpy as np

SIZE = 150
BATCH = 32


def timed(func, *args):
    """(seconds, value) of ``func(*args)``."""
    start = time.perf_counter()
    value = func(*args)
    return round(time.perf_counter() - start, 3), value


def tensorflow_startup(weights: str) -> dict:
    """TensorFlow's import, the weights file's sha256, the model build and the first (tracing) forward pass."""
    import importlib

    import_s, _ = timed(lambda: (importlib.import_module("tensorflow"), importlib.import_module("keras")))
    from featcache.backbones.xception import XceptionBackbone

    backbone = XceptionBackbone(weights, SIZE)
    hash_s, _ = timed(backbone.identity)  # featcache's fingerprint hashes the weights file
    build_s, embed = timed(backbone.build)
    pixels = np.zeros((BATCH, SIZE, SIZE, 3), np.uint8)
    first_s, _ = timed(embed, pixels)
    next_s, _ = timed(embed, pixels)
    return {
        "tensorflow_import": import_s,
        "weights_sha256": hash_s,
        "model_build": build_s,
        "first_batch": first_s,
        "steady_batch": next_s,
    }


def openvino_startup(weights: str, cache: Path) -> dict:
    """OpenVINO's conversion of the Keras model (once per weights file, then cached) and the compile of its IR."""
    from featcache.backbones.openvino import OpenVinoBackbone
    from featcache.backbones.xception import XceptionBackbone

    backbone = OpenVinoBackbone(XceptionBackbone(weights, SIZE), "float32", cache_dir=cache)
    convert_s, _ = timed(backbone.converted)
    compile_s, embed = timed(backbone.build)  # the IR is cached now: this loads and compiles it
    first_s, _ = timed(embed, np.zeros((BATCH, SIZE, SIZE, 3), np.uint8))
    return {"openvino_conversion": convert_s, "openvino_compile": compile_s, "openvino_first_batch": first_s}


@click.command()
@click.option("--weights", required=True, help="Xception no-top weights file, or imagenet.")
@click.option("--openvino-cache", type=click.Path(path_type=Path), help="An empty folder: time OpenVINO too.")
def main(weights, openvino_cache):
    """Print start-up seconds of a fresh process as JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = tensorflow_startup(weights)
    if openvino_cache is not None:
        result.update(openvino_startup(weights, openvino_cache))
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
