"""Stage two's judge: the Keras head and a logistic baseline on identical splits, and the report of both.

An output folder holds ``report.md`` and ``report.json``, ``metrics.png`` (the metric comparison),
``confusion_<model>_<split>.png``, the baseline as ``baseline.npz`` (arrays, no pickle) and, when
the head was trained here, the head directory ``head/``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.cache.layout import read_rows
from featcache.cache.reader import FeatureReader
from featcache.config import DEFAULT_COMPARE_DIR, HeadConfig, label_issues_spec
from featcache.names import shown
from featcache.training import plots, stream
from featcache.training.baseline import LogisticBaseline
from featcache.training.head import fit_head, head_metadata
from featcache.training.head_files import check_head_matches, head_logits, load_head, read_head_metadata, save_head
from featcache.training.html_report import REPORT_HTML, MapRows, map_points, write_html
from featcache.training.labels import label_issue_rows
from featcache.training.metrics import evaluate, paired_difference, softmax
from featcache.training.splits import Split, Splits, load_splits
from featcache.training.stream import EpochBatches

log = logging.getLogger(__name__)

REPORT_FORMAT, REPORT_FORMAT_VERSION = "featcache-compare", 1
KERAS, LOGISTIC = "keras_head", "logistic"
BASELINE_FILE, REPORT_JSON, REPORT_MD, METRICS_PNG = "baseline.npz", "report.json", "report.md", "metrics.png"
#: what the report calls the baseline fitted when the splits exceed the memory budget
STREAMING_BASELINE = "streaming SGD (log loss)"
#: train rows per SGD partial_fit call of the streaming baseline
SGD_BATCH_ROWS = 4096
TABLE_ROWS = (
    ("accuracy", "accuracy", ".4f"),
    ("macro_f1", "macro-F1", ".4f"),
    ("log_loss", "log loss", ".4f"),
    ("predict_seconds", "predict s", ".3f"),
)


@dataclass
class ModelRun:
    """One model's probabilities per split, with its timings and how it was made."""

    name: str
    fit_seconds: float | None
    about: dict
    predict: object  # float (m, dim) -> probabilities float (m, k)
    proba: dict[str, np.ndarray] = field(default_factory=dict)
    predict_seconds: dict[str, float] = field(default_factory=dict)

    def run_on(self, split: str, batches: EpochBatches) -> None:
        """Predict every batch of ``batches``, then close them; the time is of a pass after a call on
        the first batch, so one-off set-up (tracing, kernels) is not counted."""
        try:
            self.predict(batches.batch(0)[0])
            start = time.perf_counter()
            self.proba[split] = np.concatenate([self.predict(x) for x, _ in batches])
            self.predict_seconds[split] = time.perf_counter() - start
        finally:
            batches.vectors.close()


@dataclass
class CompareResult:
    """The report (as written to ``report.json``) and the files written into ``out``."""

    out: Path
    report: dict
    files: list[Path]

    def table(self) -> str:
        return format_table(self.report)

    def summary(self) -> str:
        """The side-by-side table and where the report went: what ``featcache compare`` prints."""
        pngs = len(self.files) - 3
        files = f"{REPORT_JSON}, {REPORT_HTML}, {pngs} PNGs, {BASELINE_FILE}"
        return f"{self.table()}\nreport: {self.out / REPORT_MD} (and {files})"


def compare(
    cache: str | Path,
    out: str | Path = DEFAULT_COMPARE_DIR,
    config: HeadConfig | None = None,
    head: str | Path | None = None,
) -> CompareResult:
    """Fit (or load, with ``head``) the Keras head and fit the logistic baseline on the same splits
    of ``cache``; score both on validation and test; write the report into ``out``."""
    config = config or HeadConfig()
    out = Path(out)
    holdout, label_issues = config.holdout_fraction, config.drop_label_issues
    if head is not None:  # the rows the head was trained and judged on; older heads say val_fraction
        options = read_head_metadata(head).get("options", {})
        holdout = options.get("holdout_fraction", options.get("val_fraction", holdout))
        label_issues = label_issues_spec(options.get("drop_label_issues"))
    splits = load_splits(
        cache, holdout, config.memory_budget, True, config.with_views, config.drop_leaks,
        label_issues=label_issue_rows(cache, label_issues),
    )  # fmt: skip
    if head is not None:  # refuse a foreign head before anything is written
        check_head_matches(read_head_metadata(head), splits.fingerprint, splits.class_names, cache)
    out.mkdir(parents=True, exist_ok=True)
    runs = [_keras_run(splits, config, head, out), _logistic_run(splits, out, config.seed)]
    for run in runs:
        for name, split in _eval_splits(splits).items():
            run.run_on(name, splits.batches(split, stream.CHUNK_ROWS))
    report = build_report(splits, runs)
    if config.drop_leaks:
        report["with_leaks"] = _scores_with_leaks(splits, runs)
    files = write_report(out, report, runs)
    files.append(_html(out, report, runs, splits))
    return CompareResult(out, report, files)


def _html(out: Path, report: dict, runs: list[ModelRun], splits: Splits) -> Path:
    """report.html, with thumbnails of the judged split's images read from the cache's data folder, and its
    map: the judged split's rows, then the rows of that split left out as leaks."""
    judged = report["significance"]["split"]
    split = splits.test if splits.test is not None else splits.validation
    leaking = splits.leaking_rows[np.asarray(read_rows(splits.cache_path, splits.leaking_rows).split) == judged]
    left_out = read_rows(splits.cache_path, leaking)
    with FeatureReader(splits.cache_path) as reader:
        x = np.concatenate(reader.gather([split.rows, leaking], stream.CHUNK_ROWS))
    drawn = MapRows(
        paths=list(read_rows(splits.cache_path, split.rows).path) + list(left_out.path),
        classes=np.concatenate([split.y, np.asarray(left_out.label, dtype=np.int64)]).tolist(),
        xy=map_points(x),
        leaks=len(leaking),
    )
    data_dir = splits.attrs.get("data_dir")
    return write_html(out, report, runs, split, splits.attrs, drawn, Path(data_dir) if data_dir else None)


def _scores_with_leaks(splits: Splits, runs: list[ModelRun]) -> dict:
    """Each model's scores on the whole validation and test splits, leaking rows in: the other number.
    Only the leaking rows' vectors are read; the other rows keep the probabilities computed already."""
    leaking = np.unique(splits.leaking_rows)
    about = read_rows(splits.cache_path, leaking)
    label, in_split = np.asarray(about.label, dtype=np.int64), np.asarray(about.split, dtype=object)
    with FeatureReader(splits.cache_path) as reader:
        (x,) = reader.gather([leaking], stream.CHUNK_ROWS)
    scores: dict = {run.name: {} for run in runs}
    for name in ("validation", "test"):
        split, mine = getattr(splits, name), in_split == name
        kept_rows, kept_y = (split.rows, split.y) if split is not None else (np.zeros(0, np.int64),) * 2
        if not len(kept_rows) and not mine.any():
            continue
        order = np.argsort(np.concatenate([kept_rows, leaking[mine]]), kind="stable")
        y = np.concatenate([kept_y, label[mine]])[order]
        for run in runs:
            parts = [run.proba[name]] if split is not None else []
            parts += [run.predict(x[mine])] if mine.any() else []
            scores[run.name][name] = evaluate(np.concatenate(parts)[order], y, splits.class_names)
    return scores


def _eval_splits(splits: Splits) -> dict:
    return {"validation": splits.validation, **({"test": splits.test} if splits.test is not None else {})}


def _keras_run(splits: Splits, config: HeadConfig, head_dir, out: Path) -> ModelRun:
    if head_dir is not None:
        model, meta = load_head(head_dir)
        check_head_matches(meta, splits.fingerprint, splits.class_names, splits.cache_path)
        fit_seconds = meta.get("metrics", {}).get("fit_seconds")
        about = {"source": str(head_dir), "options": meta.get("options"), "best_epoch": meta.get("best_epoch")}
    else:
        fit = fit_head(splits, config)
        model, fit_seconds = fit.model, fit.seconds
        saved = save_head(out / "head", model, head_metadata(splits, config, fit), fit.history)
        about = {"source": f"trained here, saved in {saved}", "options": config.to_dict(), "best_epoch": fit.best_epoch}
    about["description"] = "Keras head: " + _head_shape(about.get("options") or {})

    def predict(x: np.ndarray) -> np.ndarray:
        return softmax(head_logits(model, x))

    return ModelRun(KERAS, fit_seconds, about, predict)


def _head_shape(options: dict) -> str:
    layers = [f"Dense({u}, relu)" for u in options.get("inner", [])] + ["Dense(n_classes)"]
    drop = f", dropout {options['dropout']}" if options.get("dropout") else ""
    return f"{' -> '.join(layers)}, Adam lr {options.get('lr')}{drop}, best epoch by validation accuracy"


def _logistic_run(splits: Splits, out: Path, seed: int) -> ModelRun:
    start = time.perf_counter()
    if splits.memory.streamed:
        model = LogisticBaseline(seed=seed).fit_streaming(
            _passes(splits, splits.train, shuffle=True, seed=seed),
            _passes(splits, splits.validation),
            n_classes=len(splits.class_names),
        )
    else:
        x, y = splits.train.with_views()
        model = LogisticBaseline().fit(
            x, y, splits.validation.x, splits.validation.y, n_classes=len(splits.class_names)
        )
    fit_seconds = time.perf_counter() - start
    model.save(
        out / BASELINE_FILE,
        {"cache_fingerprint": splits.fingerprint, "class_names": splits.class_names, "feature_dim": splits.feature_dim},
    )
    about = {"source": f"fitted here, saved in {out / BASELINE_FILE}", "C": model.C_}
    if model.solver_ == "sgd":
        about["description"] = (
            f"{STREAMING_BASELINE} because {splits.memory.reason()}: standardized by a streaming StandardScaler, "
            f"one-vs-rest SGDClassifier, alpha={model.alpha_:g} chosen on validation"
        )
        about["alpha"], about["alpha_grid"] = model.alpha_, _grid(model.alphas_, model.val_accuracy_)
    else:
        views = (
            f", fitted on the clean vectors and all {len(x) - len(splits.train)} augmented views"
            if splits.train.views is not None
            else ""
        )
        about["description"] = (
            f"standardized features + multinomial LogisticRegression, C={model.C_:g} chosen on validation{views}"
        )
        about["c_grid"] = _grid(model.cs_, model.val_accuracy_)
    return ModelRun(LOGISTIC, fit_seconds, about, model.predict_proba)


def _grid(values, accuracies) -> dict[str, float]:
    return {f"{v:g}": float(a) for v, a in zip(values, accuracies)}


def _passes(splits: Splits, split: Split, shuffle: bool = False, seed: int = 0):
    """A function of an epoch that yields ``split`` in batches of SGD_BATCH_ROWS, read once per call."""

    def one_pass(epoch: int = 0):
        batches = splits.batches(split, SGD_BATCH_ROWS, shuffle, seed)
        batches.start_epoch(epoch)
        try:
            yield from batches
        finally:
            batches.vectors.close()

    return one_pass


def build_report(splits: Splits, runs: list[ModelRun]) -> dict:
    """The JSON report: data, each model's scores per split, and the paired significance test."""
    names = splits.class_names
    models = {}
    for run in runs:
        scores = {s: evaluate(p, _eval_splits(splits)[s].y, names) for s, p in run.proba.items()}
        for split, seconds in run.predict_seconds.items():
            scores[split]["predict_seconds"] = seconds
        models[run.name] = {**run.about, "fit_seconds": run.fit_seconds, "evaluation": scores}
    judged = "test" if splits.test is not None else "validation"
    a, b = runs[0], runs[1]
    pred = {run.name: np.argmax(run.proba[judged], axis=1) for run in runs}
    significance = paired_difference(_eval_splits(splits)[judged].y, pred[a.name], pred[b.name])
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "cache_path": str(splits.cache_path),
        "cache_fingerprint": splits.fingerprint,
        "class_names": names,
        "rows": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test or [])},
        "validation_carved": splits.val_carved,
        "memory": splits.memory.to_dict(),
        "leaks_dropped": splits.dropped,
        "label_issues_dropped": len(splits.label_issues),
        "models": models,
        "significance": {"split": judged, "a": a.name, "b": b.name, **significance},
    }


def format_table(report: dict) -> str:
    """The side-by-side table of both models, as ``featcache compare`` prints it."""
    models = list(report["models"])
    rows = [("", *models)]
    for split in ("validation", "test"):
        if split not in report["models"][models[0]]["evaluation"]:
            continue
        for key, label, fmt in TABLE_ROWS:
            values = [format(report["models"][m]["evaluation"][split][key], fmt) for m in models]
            rows.append((f"{split} {label}", *values))
    rows.append(("fit seconds", *(_seconds(report["models"][m]["fit_seconds"]) for m in models)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{width}}" + "".join(f"{v:>14}" for v in r[1:]) for r in rows]
    lines.append(significance_line(report["significance"]))
    for split, scores in _leak_rows(report):
        lines.append(f"{split} accuracy with the {report['leaks_dropped']} leaking rows in".ljust(width) + scores)
    if report.get("label_issues_dropped"):
        lines.append(f"both trained without {report['label_issues_dropped']} likely mislabelled train rows")
    if report.get("memory", {}).get("streamed"):
        lines.append(f"{LOGISTIC}: {STREAMING_BASELINE} because {report['memory']['reason']}")
    return "\n".join(lines)


def _leak_rows(report: dict) -> list[tuple[str, str]]:
    """(split, formatted accuracies of each model) on the splits with their leaking rows, when dropped."""
    found = report.get("with_leaks")
    if not found or not report.get("leaks_dropped"):
        return []
    models = list(report["models"])
    splits = [s for s in ("validation", "test") if s in found[models[0]]]
    return [(s, "".join(f"{found[m][s]['accuracy']:>14.4f}" for m in models)) for s in splits]


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def significance_line(sig: dict) -> str:
    verdict = "significant" if sig["significant"] else "not significant"
    lo, hi = sig["bootstrap_ci95"]
    return (
        f"{sig['split']} accuracy {sig['a']} - {sig['b']}: {sig['accuracy_difference']:+.4f} "
        f"(95% bootstrap CI [{lo:+.4f}, {hi:+.4f}]; McNemar exact p = {sig['mcnemar_p_value']:.3g}, "
        f"{verdict} at {sig['alpha']})"
    )


def write_report(out: Path, report: dict, runs: list[ModelRun]) -> list[Path]:
    """``report.json``, ``report.md``, the confusion matrices and the metric comparison PNGs."""

    files = []
    names = report["class_names"]
    for name, model in report["models"].items():
        for split, scores in model["evaluation"].items():
            path = out / f"confusion_{name}_{split}.png"
            title = f"{name} on {split}: accuracy {scores['accuracy']:.3f}"
            files.append(plots.confusion_matrix(np.array(scores["confusion_matrix"]), names, path, title))
    bars = {
        name: {f"{s} {k}": model["evaluation"][s][k] for s in model["evaluation"] for k in ("accuracy", "macro_f1")}
        for name, model in report["models"].items()
    }
    files.append(plots.metric_comparison(bars, out / METRICS_PNG, "Keras head vs logistic baseline"))
    report["files"] = [p.name for p in files] + [BASELINE_FILE, REPORT_MD, REPORT_JSON, REPORT_HTML]
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (out / REPORT_MD).write_text(shown(markdown(report)))
    return [out / REPORT_MD, out / REPORT_JSON, *files]


def markdown(report: dict) -> str:
    """The report as Markdown: data, the side-by-side table, per-class scores, figures."""
    models = report["models"]
    rows = report["rows"]
    lines = [
        "# featcache compare",
        "",
        f"Cache `{report['cache_path']}` (fingerprint `{report['cache_fingerprint'][:12]}`): "
        f"{rows['train']} train, {rows['validation']} validation, {rows['test']} test rows"
        + (" (validation carved from train)." if report["validation_carved"] else "."),
        "",
        *(f"- **{name}**: {m['description']} ({m['source']})" for name, m in models.items()),
        "",
        "```",
        format_table(report),
        "```",
        "",
        "",
        f"predict s: one pass over the whole split (in batches of {stream.CHUNK_ROWS} rows), after a warm-up call "
        "on the first batch. fit seconds of a head loaded with --head are those recorded in its head.json. "
        + _grid_sentence(models[LOGISTIC]),
        "",
        "![metric comparison](metrics.png)",
    ]
    lines += ["", *per_class_table(report), "", "## Confusion matrices", ""]
    for name, model in models.items():
        lines += [f"![{name} {s}](confusion_{name}_{s}.png)" for s in model["evaluation"]]
    return "\n".join(lines) + "\n"


def _grid_sentence(logistic: dict) -> str:
    name = "alpha" if "alpha_grid" in logistic else "C"
    grid = logistic.get("alpha_grid") or logistic["c_grid"]
    return (
        f"Validation accuracy of each {name} tried: " + ", ".join(f"{name}={v}: {a:.4f}" for v, a in grid.items()) + "."
    )


def per_class_table(report: dict) -> list[str]:
    """Markdown lines: precision and recall of each model per class on the judged split."""
    models, split = report["models"], report["significance"]["split"]
    header = ["class", *(f"{m} {k}" for m in models for k in ("precision", "recall")), "support"]
    lines = [f"## Per class on {split}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for cls in report["class_names"]:
        cells = [models[m]["evaluation"][split]["per_class"][cls] for m in models]
        scores = [f"{c[k]:.3f}" for c in cells for k in ("precision", "recall")]
        lines.append("| " + " | ".join([cls, *scores, str(cells[0]["support"])]) + " |")
    return lines
