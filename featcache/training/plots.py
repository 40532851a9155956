"""PNG figures of stage two: learning curves, confusion matrices, the metric comparison.

Figures are drawn with matplotlib's object API on the Agg canvas, so no display and no pyplot
state are involved, and matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featcache.names import shown


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def learning_curves(history: dict[str, list[float]], best_epoch: int, path: Path, title: str) -> Path:
    """Train vs validation accuracy and loss per epoch, the best epoch marked, the gap written on it."""
    fig = figure(10, 4)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key, name in zip(fig.subplots(1, 2), ("accuracy", "loss"), ("Accuracy", "Loss")):
        ax.plot(epochs, history[key], "o-", label=f"train {key}")
        ax.plot(epochs, history[f"val_{key}"], "s-", label=f"validation {key}")
        ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    gap = history["accuracy"][best_epoch - 1] - history["val_accuracy"][best_epoch - 1]
    fitted_suptitle(fig, f"{title}; train - validation accuracy at best epoch: {gap:+.3f}")
    fig.savefig(path)
    return Path(path)


def fitted_suptitle(fig, text: str):
    """``fig.suptitle(text)``, wrapped onto more lines until it is narrower than the figure: a centred title
    wider than the figure (a long cache name) would be cut at both edges. A name without spaces is broken
    inside; the constrained layout makes room for the extra lines."""
    import textwrap

    title = fig.suptitle(text)
    room = 0.96 * fig.bbox.width
    renderer = fig.canvas.get_renderer()
    chars = len(text)
    while chars > 8 and title.get_window_extent(renderer).width > room:
        chars -= max(1, chars // 50)
        title.set_text(textwrap.fill(text, chars, break_on_hyphens=False))
    return title


def confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> Path:
    """A confusion matrix (rows true class, columns predicted) with its counts written in the cells."""
    matrix = np.asarray(matrix)
    k = len(class_names)
    fig = figure(1.0 + 0.6 * max(k, 4), 0.8 + 0.55 * max(k, 4))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    names = [shown(name) for name in class_names]  # a figure's font draws no name that is not UTF-8
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color="white" if count > threshold else "black")
    fig.savefig(path)
    return Path(path)


def metric_comparison(scores: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Grouped bars: for each metric (e.g. "validation accuracy"), one bar per model."""
    models = list(scores)
    metrics = list(next(iter(scores.values())))
    fig = figure(max(6, 1.6 * len(metrics)), 4)
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(metrics))
    for i, model in enumerate(models):
        values = [scores[model][m] for m in metrics]
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=model)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, metrics, rotation=20, ha="right")
    ax.set_ylim(0, 1.15)  # room for the legend above the bars
    ax.set_title(title)
    ax.legend(loc="upper center", ncol=len(models))
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)
    return Path(path)
