"""Augmented views on the real data: what they cost to extract, and what they change in the best head.

    python -m benchmarks.augmented --data DATA_DIR --weights FILE [--views 10] [--policy lesson]

1. ``featcache extract`` of DATA (clean vectors only), then the same command with ``--augment K
   --augment-policy P`` on that cache: the second run computes only the views, so its time (whole
   process, TensorFlow start-up in) is the extra extraction time of the views.
2. ``featcache sweep`` of one grid (default: lr 0.001, 0.01 x inner 0, 100 x dropout 0, 0.5 x 3 seeds,
   10 epochs) without and with ``--with-views``: the best configuration of each,
   its validation accuracy (mean, sd, min-max over seeds), Keras' train accuracy at the best epoch
   (on the vectors the epoch drew, dropout on) and the gap between them.
3. ``featcache compare --head best-head`` of each sweep (with ``--with-views`` for the augmented one, so
   the logistic baseline is fitted on every view too): test accuracy of the chosen head and of the
   baseline.
Everything is written in a temporary folder, deleted at the end.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> tuple[float, str]:
    """``featcache ARGS`` as a process; its wall-clock seconds and its output."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "featcache", *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise click.ClickException(f"featcache {' '.join(args[:2])} failed: {done.stderr.strip()[-1500:]}")
    return time.perf_counter() - start, done.stdout


def best_of(sweep: Path) -> dict:
    """The best configuration of a sweep with its runs' validation and train accuracy at the best epoch."""
    report = json.loads((sweep / "sweep.json").read_text())
    best = report["ranking"][0]
    runs = [
        r for r in report["runs"] if (r["lr"], r["inner"], r["dropout"]) == (best["lr"], best["inner"], best["dropout"])
    ]
    train = [r["train_accuracy_at_best"] for r in runs]
    val = [r["best_val_accuracy"] for r in runs]
    return {**best, "train_mean": statistics.fmean(train), "gap": statistics.fmean(train) - statistics.fmean(val)}


def test_accuracy(compare_out: Path) -> dict[str, float]:
    report = json.loads((compare_out / "report.json").read_text())
    return {name: m["evaluation"]["test"]["accuracy"] for name, m in report["models"].items()}


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--weights", required=True, help="Xception no-top weights file.")
@click.option("--views", type=int, default=10, show_default=True)
@click.option("--policy", default="lesson", show_default=True)
@click.option("--lr", default="0.001,0.01", show_default=True)
@click.option("--inner", default="0,100", show_default=True)
@click.option("--dropout", default="0,0.5", show_default=True)
@click.option("--seeds", type=int, default=3, show_default=True)
def main(data, weights, views, policy, lr, inner, dropout, seeds):
    """Extraction time of the views, and the best head with and without them."""
    with tempfile.TemporaryDirectory(prefix="featcache-augmented-bench-") as tmp:
        work = Path(tmp)
        cache = work / "clothing.h5"
        clean_s, _ = run("extract", str(data), "-o", str(cache), "--weights", weights, "-q")
        views_s, out = run(
            "extract", str(data), "-o", str(cache), "--weights", weights, "-q",
            "--augment", str(views), "--augment-policy", policy,
        )  # fmt: skip
        made = re.search(r"views: .*computed (\d+)", out)
        grid = ["--lr", lr, "--inner", inner, "--dropout", dropout, "--seeds", str(seeds), "-q"]
        found, tests, sweep_s = {}, {}, {}
        for arm, extra in (("clean", []), ("augmented", ["--with-views"])):
            sweep = work / f"sweep-{arm}"
            sweep_s[arm], _ = run("sweep", str(cache), "-o", str(sweep), *grid, *extra)
            found[arm] = best_of(sweep)
            compared = work / f"compare-{arm}"
            run("compare", str(cache), "--head", str(sweep / "best-head"), "-o", str(compared), *extra)
            tests[arm] = test_accuracy(compared)
    lines = [
        f"extract, clean vectors only: {clean_s:.1f} s (whole process)",
        f"extract --augment {views} --augment-policy {policy} on that cache: {views_s:.1f} s (whole process; "
        f"{made.group(1) if made else '?'} views computed, {views_s / clean_s:.2f}x the clean extraction)",
        f"grid: lr {lr} x inner {inner} x dropout {dropout} x {seeds} seeds, 10 epochs",
    ]
    for arm in ("clean", "augmented"):
        b = found[arm]
        lines.append(
            f"{arm:>9}: best lr {b['lr']:g}, inner {b['inner']}, dropout {b['dropout']:g}: validation accuracy "
            f"{b['mean']:.4f} (sd {b['sd']:.4f}, {b['min']:.4f}-{b['max']:.4f}, {b['seeds']} seeds); train accuracy "
            f"at the best epoch {b['train_mean']:.4f}, gap {b['gap']:+.4f}; test accuracy of its best head "
            f"{tests[arm]['keras_head']:.4f}, logistic baseline {tests[arm]['logistic']:.4f}; "
            f"sweep {sweep_s[arm]:.0f} s"
        )
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
