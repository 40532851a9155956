"""What ``featcache sweep`` writes: sweep.csv, sweep.json, sweep.md, plots, the logistic C sweep, the best head."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from featcache.config import HeadConfig, SweepConfig
from featcache.errors import ConfigError
from featcache.training.baseline import LogisticBaseline
from featcache.training.head import train_head
from featcache.training.html_report import write_sweep_html
from featcache.training.plots import figure
from featcache.training.splits import Splits

BEST_HEAD = "best-head"
CSV_COLUMNS = (
    "lr", "inner", "dropout", "seed", "best_epoch", "best_val_accuracy", "val_loss_at_best",
    "train_accuracy_at_best", "seconds",
)  # fmt: skip
AXES = ("lr", "inner", "dropout")


def baseline_sweep(splits: Splits, cs) -> list[dict]:
    """The logistic baseline's validation accuracy for each C, on the sweep's splits."""
    if splits.train.x is None or splits.validation.x is None:
        raise ConfigError("--baseline-c needs the train and validation vectors in memory; raise --memory-budget")
    x, y = splits.train.with_views()
    model = LogisticBaseline(cs=cs).fit(x, y, splits.validation.x, splits.validation.y, len(splits.class_names))
    return [{"C": float(c), "val_accuracy": float(a)} for c, a in zip(model.cs_, model.val_accuracy_)]


def best_head(cache, out: Path, best: dict, runs: list[dict], config: SweepConfig) -> Path:
    """Train the best configuration again with ``train_head``, with its best seed, into ``out/best-head``:
    a normal head folder that predict and export accept."""
    mine = [r for r in runs if (r["lr"], r["inner"], r["dropout"]) == (best["lr"], best["inner"], best["dropout"])]
    seed = max(mine, key=lambda r: (r["best_val_accuracy"], -r["seed"]))["seed"]
    head = HeadConfig(
        lr=best["lr"],
        inner=(best["inner"],) if best["inner"] else (),
        dropout=best["dropout"],
        seed=seed,
        epochs=config.epochs,
        batch_size=config.batch_size,
        holdout_fraction=config.holdout_fraction,
        memory_budget=config.memory_budget,
        with_views=config.with_views,
        drop_leaks=config.drop_leaks,
        drop_label_issues=config.drop_label_issues,
    )
    folder = out / BEST_HEAD
    shutil.rmtree(folder, ignore_errors=True)  # the last sweep's best head, in the sweep's own folder
    train_head(cache, folder, head)
    return folder


def write(result, config: SweepConfig) -> None:
    """sweep.csv (one row per run), sweep.json (everything), sweep.md (the ranking) and the plots."""
    out = result.out
    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(result.runs, key=lambda r: (r["lr"], r["inner"], r["dropout"], r["seed"])))
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()}
    if isinstance(config.drop_label_issues, Path):
        settings["drop_label_issues"] = str(config.drop_label_issues)
    settings["label_issues_dropped"] = result.label_issues_dropped
    document = {"settings": settings, "ranking": result.ranking, "baseline": result.baseline, "runs": result.runs}
    document["best_head"] = str(result.best_head) if result.best_head else None
    (out / "sweep.json").write_text(json.dumps(document, indent=1))
    (out / "sweep.md").write_text(markdown(result))
    pngs = [by_axis(result.ranking, axis, out / f"val_accuracy_by_{axis}.png") for axis in AXES]
    pngs.append(heatmap(result.ranking, config.heatmap, out / f"heatmap_{'_'.join(config.heatmap)}.png"))
    write_sweep_html(out, markdown(result), pngs)


def markdown(result) -> str:
    """The ranking as a Markdown table, then the baseline's C sweep."""
    lines = [
        "| rank | lr | inner | dropout | mean val accuracy | sd | min | max | seeds |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, r in enumerate(result.ranking, start=1):
        lines.append(
            f"| {i} | {r['lr']:g} | {r['inner']} | {r['dropout']:g} | {r['mean']:.4f} | {r['sd']:.4f} | "
            f"{r['min']:.4f} | {r['max']:.4f} | {r['seeds']} |"
        )
    if result.label_issues_dropped:
        lines += ["", f"Trained without {result.label_issues_dropped} likely mislabelled train rows."]
    if result.baseline:
        lines += ["", "| logistic C | val accuracy |", "| ---: | ---: |"]
        lines += [f"| {b['C']:g} | {b['val_accuracy']:.4f} |" for b in result.baseline]
    return "\n".join(lines) + "\n"


def by_axis(ranking: list[dict], axis: str, path: Path) -> Path:
    """Mean validation accuracy of every configuration, grouped by the values of one axis."""
    values = sorted({r[axis] for r in ranking})
    fig = figure(6, 4)
    ax = fig.subplots()
    groups = [[r["mean"] for r in ranking if r[axis] == v] for v in values]
    ax.boxplot(groups, tick_labels=[f"{v:g}" for v in values])
    for i, scores in enumerate(groups, start=1):
        ax.plot(np.full(len(scores), i), scores, "o", alpha=0.5, markersize=4)
    ax.set_xlabel(axis)
    ax.set_ylabel("validation accuracy (mean over seeds)")
    ax.set_title(f"every configuration, by {axis}")
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return path


def heatmap(ranking: list[dict], axes: tuple[str, str], path: Path) -> Path:
    """The best mean validation accuracy for each pair of values of two axes (the others at their best)."""
    rows, cols = (sorted({r[a] for r in ranking}) for a in axes)
    grid = np.full((len(rows), len(cols)), np.nan)
    for r in ranking:
        i, j = rows.index(r[axes[0]]), cols.index(r[axes[1]])
        grid[i, j] = np.nanmax([grid[i, j], r["mean"]])
    fig = figure(6, 5)
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols])
    ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
    ax.set_xlabel(axes[1])
    ax.set_ylabel(axes[0])
    fig.colorbar(image, ax=ax, label="validation accuracy")
    ax.set_title(f"best over the other axes, by {axes[0]} and {axes[1]}")
    fig.savefig(path)
    return path
