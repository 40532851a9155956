"""One featcache operation in a process of its own, so its peak memory and disk writes are its alone.

    python -m benchmarks.scale_op extract DATA_DIR CACHE       # featcache.api.extract, 2048-d fake backbone
    python -m benchmarks.scale_op extract --assume-unchanged DATA_DIR CACHE
    python -m benchmarks.scale_op imports                      # the imports of extract, nothing run
    python -m benchmarks.scale_op open-features CACHE          # plain h5py opens /features, reads 10 rows
    python -m benchmarks.scale_op verify CACHE                 # featcache.api.verify, the same fake backbone
    python -m benchmarks.scale_op tf-baseline N_CLASSES        # plain Keras: default head built, compiled, fitted
    python -m benchmarks.scale_op cli [--keras] ARGS...        # the featcache command line, e.g. cli info CACHE

The last line of stdout is JSON: ``seconds``, the operation alone (the imports it needs are done
before the timer: featcache, h5py, PIL, and Keras with ``--keras``); ``write_bytes`` and
``read_bytes`` it caused (``/proc/self/io``, counted from just before the operation);
``vm_hwm_mb``, the process's peak resident memory (VmHWM, start-up included). Nothing here
imports TensorFlow unless the operation needs it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from benchmarks.fake_extract import FakeBackbone, peak_rss_mb

#: extract options of every cache of the scale section: tiny images, no weights (the fake backbone has none)
EXTRACT_OPTIONS = {"image_size": 71, "weights": "none"}


def io_counters() -> dict[str, int]:
    """This process's I/O counters (Linux ``/proc/self/io``; empty elsewhere)."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return {}
    return {key: int(value) for key, value in (line.split(": ") for line in text.splitlines() if line)}


def measured(operation) -> dict:
    """Run ``operation()`` (which returns a dict of its own figures) and add its seconds, bytes and peak RSS."""
    before = io_counters()
    start = time.perf_counter()
    figures = operation()
    seconds = time.perf_counter() - start
    after = io_counters()
    moved = {key: after[key] - before[key] for key in ("write_bytes", "read_bytes", "cancelled_write_bytes") if after}
    return {"seconds": round(seconds, 3), **moved, "vm_hwm_mb": round(peak_rss_mb(), 1), **figures}


@click.group()
def main():
    """One featcache operation, measured; prints JSON."""


@main.command()
@click.option("--assume-unchanged", is_flag=True, help="As featcache extract --assume-unchanged.")
@click.option("--commit-seconds", type=float, default=None, help="As featcache extract --commit-seconds.")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("cache", type=click.Path(path_type=Path))
def extract(assume_unchanged, commit_seconds, data, cache):
    """Extract (or update) CACHE from DATA with the 2048-d fake backbone."""
    from featcache.api import extract as run

    def operation() -> dict:
        options = {**EXTRACT_OPTIONS, "assume_unchanged": assume_unchanged}
        if commit_seconds is not None:
            options["commit_seconds"] = commit_seconds
        result = run(data, cache, backbone=FakeBackbone(), **options)
        return {"rows_after": result.rows, "computed": result.computed, "entry_bytes": cache.stat().st_size}

    click.echo(json.dumps(measured(operation)))


@main.command()
def imports():
    """Nothing but the imports an extract makes (featcache, h5py, PIL): the memory every process starts with."""
    import h5py  # noqa: F401
    import PIL.Image  # noqa: F401

    from featcache.api import extract  # noqa: F401

    click.echo(json.dumps(measured(dict)))


@main.command("open-features")
@click.argument("cache", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def open_features(cache):
    """Open CACHE's /features with plain h5py and read its first 10 rows: what the virtual dataset's
    mappings cost (``rss_added_mb``: resident memory added, h5py imported before)."""
    import h5py

    def operation() -> dict:
        before = resident_mb()
        with h5py.File(cache, "r") as h5:
            h5["features"][:10]
            return {"rss_added_mb": round(resident_mb() - before, 1)}

    click.echo(json.dumps(measured(operation)))


def resident_mb() -> float:
    """This process's resident memory now (VmRSS), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@main.command()
@click.argument("cache", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify(cache):
    """Verify CACHE with the 2048-d fake backbone (rows whose image is absent are skipped, as featcache does)."""
    from featcache.api import verify as run

    def operation() -> dict:
        result = run(cache, backbone=FakeBackbone())
        return {"sampled": result.sampled, "compared": result.compared, "skipped": len(result.skipped)}

    click.echo(json.dumps(measured(operation)))


@main.command("tf-baseline")
@click.argument("n_classes", type=int)
def tf_baseline(n_classes):
    """What TensorFlow alone costs: plain Keras builds, compiles and fits the default head on a tiny array."""
    import keras

    def operation() -> dict:
        inputs = keras.Input((FakeBackbone.dim,))
        model = keras.Model(inputs, keras.layers.Dense(n_classes)(inputs))
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss, metrics=["accuracy"])
        rng = np.random.default_rng(0)
        x = rng.standard_normal((256, FakeBackbone.dim), dtype=np.float32)
        y = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, 256)]
        model.fit(x, y, batch_size=32, epochs=1, validation_data=(x[:64], y[:64]), verbose=0)
        return {}

    click.echo(json.dumps(measured(operation)))


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--keras", "with_keras", is_flag=True, help="Import Keras and TensorFlow before the timer.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cli(with_keras, args):
    """Run ``featcache ARGS`` in this process (an error exits 1 with its message)."""
    import featcache.api  # noqa: F401 - the stage modules, imported before the timer
    from featcache.cli import main as featcache_main

    if with_keras:
        import keras  # noqa: F401

    def operation() -> dict:
        featcache_main.main(args=list(args), prog_name="featcache", standalone_mode=False)
        return {}

    try:
        figures = measured(operation)
    except click.ClickException as exc:
        raise click.ClickException(f"featcache {' '.join(args)}: {exc.format_message()}") from None
    click.echo(json.dumps(figures))


if __name__ == "__main__":
    main()
