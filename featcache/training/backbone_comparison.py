"""``featcache compare A.h5 B.h5 ...``: the same head options and baseline on caches of other backbones.

Each cache gets the single-cache comparison in a folder of its own (``<out>/<label>/``, a safe file
name made from the backbone name the cache recorded); the caches' splits are checked to hold the
same images (by content hash) split the same way, and the report says where they do not. One table
and one plot set the backbones side by side: accuracy and macro-F1 of the head and of the baseline,
extraction images/s, vector size.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.cache.layout import SPLITS
from featcache.cache.reader import read_row_index, read_sha256
from featcache.config import HeadConfig
from featcache.names import file_component
from featcache.training import plots
from featcache.training.comparison import KERAS, LOGISTIC, compare

TABLE_JSON, TABLE_CSV, TABLE_MD, TABLE_PNG = "backbones.json", "backbones.csv", "backbones.md", "backbones.png"
COLUMNS = ("backbone", "cache", "feature_dim", "images_per_s", "split",
           "head_accuracy", "head_macro_f1", "logistic_accuracy", "logistic_macro_f1")  # fmt: skip


@dataclass
class CachesResult:
    """One row per cache, the split check, and the files written into ``out``."""

    out: Path
    rows: list[dict]
    split_notes: list[str]
    files: list[Path]

    def summary(self) -> str:
        lines = [format_table(self.rows)]
        lines += self.split_notes or ["splits: every cache holds the same images in the same splits (by content hash)"]
        files = f"{TABLE_JSON}, {TABLE_CSV}, {TABLE_PNG}, one folder per cache"
        lines.append(f"report: {self.out / TABLE_MD} (and {files})")
        return "\n".join(lines)


def compare_caches(caches, out: str | Path, config: HeadConfig | None = None) -> CachesResult:
    """Compare head and baseline on each of ``caches`` (two or more) with the same options."""
    config, out = config or HeadConfig(), Path(out)
    paths = [Path(c) for c in caches]
    notes = split_differences(paths)
    labels = _labels(paths)
    rows = []
    for path, label in zip(paths, labels):
        result = compare(path, out / label, config)
        rows.append(_row(path, label, result.report))
    out.mkdir(parents=True, exist_ok=True)
    files = _write(out, rows, notes)
    return CachesResult(out, rows, notes, files)


def split_differences(paths: list[Path]) -> list[str]:
    """Lines naming, for each cache unlike the first, how many images each split has that the first's
    lacks and lacks that the first's has (empty when all agree)."""
    first, notes = _split_hashes(paths[0]), []
    for path in paths[1:]:
        mine = _split_hashes(path)
        for split in SPLITS:
            extra, missing = len(mine[split] - first[split]), len(first[split] - mine[split])
            if extra or missing:
                notes.append(
                    f"splits differ: {path.name} {split} has {extra} image(s) {paths[0].name} lacks there and lacks "
                    f"{missing} it has; the scores are not on the same images"
                )
    return notes


def _split_hashes(path: Path) -> dict[str, set[str]]:
    index = read_row_index(path)
    return {name: set(read_sha256(path, index.split_indices(name))) for name in SPLITS}


def _labels(paths: list[Path]) -> list[str]:
    """Each cache's backbone name, with its file name where two share a backbone, as a safe folder name
    (the name is read from the cache: ``../x`` must not become a folder outside ``out``). Where labels
    still meet (the same file name in two folders), each is numbered by its place on the command line."""
    names = [str(read_row_index(p).attrs.get("backbone", "xception")) for p in paths]
    labels = [file_component(n if names.count(n) == 1 else f"{n}-{p.stem}") for n, p in zip(names, paths)]
    if len(set(labels)) < len(labels):
        labels = [f"{i}-{label}" for i, label in enumerate(labels, 1)]
    return labels


def _row(path: Path, label: str, report: dict) -> dict:
    attrs = read_row_index(path).attrs
    models = report["models"]
    split = report["significance"]["split"]
    scores = {name: models[name]["evaluation"][split] for name in (KERAS, LOGISTIC)}
    return {
        "backbone": label,
        "cache": str(path),
        "feature_dim": int(attrs.get("feature_dim", 0)),
        "images_per_s": attrs.get("images_per_s"),
        "split": split,
        "head_accuracy": scores[KERAS]["accuracy"],
        "head_macro_f1": scores[KERAS]["macro_f1"],
        "logistic_accuracy": scores[LOGISTIC]["accuracy"],
        "logistic_macro_f1": scores[LOGISTIC]["macro_f1"],
    }


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'backbone':<22}{'dim':>6}{'images/s':>10}{'split':>12}"
        f"{'head acc':>10}{'head F1':>9}{'logreg acc':>12}{'logreg F1':>11}"
    )
    lines = [header]
    for r in rows:
        speed = f"{r['images_per_s']:.1f}" if r["images_per_s"] else "n/a"
        lines.append(
            f"{r['backbone']:<22}{r['feature_dim']:>6}{speed:>10}{r['split']:>12}{r['head_accuracy']:>10.4f}"
            f"{r['head_macro_f1']:>9.4f}{r['logistic_accuracy']:>12.4f}{r['logistic_macro_f1']:>11.4f}"
        )
    return "\n".join(lines)


def _write(out: Path, rows: list[dict], notes: list[str]) -> list[Path]:
    (out / TABLE_JSON).write_text(json.dumps({"backbones": rows, "split_notes": notes}, indent=2) + "\n")
    with open(out / TABLE_CSV, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    md = ["# featcache compare: backbones", "", "```", format_table(rows), "```", "", *notes, "", f"![]({TABLE_PNG})"]
    (out / TABLE_MD).write_text("\n".join(md) + "\n")
    return [out / TABLE_MD, out / TABLE_JSON, out / TABLE_CSV, _plot(rows, out / TABLE_PNG)]


def _plot(rows: list[dict], path: Path) -> Path:
    """Accuracy and macro-F1 of head and baseline per backbone, with each backbone's size and speed."""
    fig = plots.figure(max(6.0, 1.6 * len(rows)), 4.0)
    ax = fig.subplots()
    keys = ("head_accuracy", "head_macro_f1", "logistic_accuracy", "logistic_macro_f1")
    x, width = np.arange(len(rows)), 0.2
    for i, key in enumerate(keys):
        ax.bar(x + (i - 1.5) * width, [r[key] for r in rows], width, label=key.replace("_", " "))
    speeds = [f"{r['images_per_s']:.0f}/s" if r["images_per_s"] else "" for r in rows]
    ax.set_xticks(x, [f"{r['backbone']}\n{r['feature_dim']}-d {s}" for r, s in zip(rows, speeds)], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"{rows[0]['split']} score")
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path)
    return path
