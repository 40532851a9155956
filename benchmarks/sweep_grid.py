"""The lesson's grid with `featcache sweep`, against the reference recipe training the same grid.

    python -m benchmarks.sweep_grid --data DATA_DIR --weights FILE [--cache CACHE] [--recipe-epochs 1]

The grid is the sweep's default: learning rates 0.0001, 0.001, 0.01, 0.1 x inner 0, 10, 100, 1000 x
dropout 0, 0.2, 0.5, 0.8 x 3 seeds = 192 runs of 10 epochs. ``featcache sweep`` is timed as a whole
process (TensorFlow's start-up in), on a cache extracted first (``--cache`` to reuse one; its
extraction time is printed apart). The reference recipe is the lesson's own
(:mod:`benchmarks.recipes` ``lesson``), run for ``--recipe-epochs`` epochs in a process of its own;
its median epoch time x 10 epochs x 192 runs is what the same grid costs by the recipe — an
extrapolation from the epochs measured, and said so.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> float:
    """Run ``command`` to its end; its wall-clock seconds as a whole process."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(command[:4])} failed: {done.stderr.strip()[-1500:]}")
    return time.perf_counter() - start


def featcache(*args: str) -> list[str]:
    return [sys.executable, "-m", "featcache", *args]


def recipe_epoch_seconds(data: Path, weights: str, epochs: int, work: Path) -> list[float]:
    out = work / "recipe.json"
    command = [sys.executable, "-m", "benchmarks.recipes", "lesson", str(data), "--weights", weights]
    timed(command + ["--epochs", str(epochs), "--out", str(out)])
    return [float(s) for s in json.loads(out.read_text())["epoch_seconds"]]


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--weights", required=True, help="Xception no-top weights file.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="A cache of DATA to reuse.")
@click.option("--jobs", type=int, default=None, help="--jobs of featcache sweep (default: its own).")
@click.option("--recipe-epochs", type=int, default=1, show_default=True, help="Epochs of the recipe to time.")
def main(data, weights, cache, jobs, recipe_epochs):
    """Time the 192-run grid with featcache sweep and compare it with the recipe's time for the same grid."""
    with tempfile.TemporaryDirectory(prefix="featcache-sweep-bench-") as tmp:
        work = Path(tmp)
        extract_seconds = None
        if cache is None:
            cache = work / "clothing.h5"
            extract_seconds = timed(featcache("extract", str(data), "-o", str(cache), "--weights", weights, "-q"))
        out = work / "sweep"
        args = ["sweep", str(cache), "-o", str(out), "-q", *(["--jobs", str(jobs)] if jobs else [])]
        sweep_seconds = timed(featcache(*args))
        report = json.loads((out / "sweep.json").read_text())
        epochs = recipe_epoch_seconds(data, weights, recipe_epochs, work) if recipe_epochs else []
    runs, best = len(report["runs"]), report["ranking"][0]
    lines = [
        f"featcache sweep, {runs} runs of {report['settings']['epochs']} epochs: {sweep_seconds:.1f} s "
        f"(whole process, TensorFlow start-up in; {sweep_seconds / runs:.2f} s per run)",
        f"best: lr {best['lr']:g}, inner {best['inner']}, dropout {best['dropout']:g}: validation accuracy "
        f"{best['mean']:.4f} (sd {best['sd']:.4f}, {best['min']:.4f}-{best['max']:.4f} over {best['seeds']} seeds)",
    ]
    if extract_seconds is not None:
        lines.append(f"extract once (not in the sweep's time): {extract_seconds:.1f} s (whole process)")
    if epochs:
        per_epoch = statistics.median(epochs)
        grid = per_epoch * report["settings"]["epochs"] * runs
        lines.append(
            f"reference recipe: {per_epoch:.1f} s per epoch (median of {len(epochs)} measured: "
            f"{', '.join(f'{s:.1f}' for s in epochs)}); the same grid by the recipe, extrapolated from "
            f"{len(epochs)} epoch(s): {grid:.0f} s = {grid / 3600:.1f} h; "
            f"featcache sweep takes 1/{grid / sweep_seconds:.0f} of it"
        )
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
