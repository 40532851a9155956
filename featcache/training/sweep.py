"""``featcache sweep``: train every head configuration of a grid for several seeds, rank them, keep the best.

A run is one configuration (learning rate, inner layer size, dropout) and one seed. The runs that
share a learning rate and a seed are trained together, as the branches of one Keras model fed the
same batches: each branch has its own weights and its own loss, their sum is minimised with one Adam,
and Adam updates every weight from its own gradient, so each branch learns exactly as it would
alone on those batches — at the cost of one pass over the data for the whole group. Groups run in
``jobs`` worker processes that each start TensorFlow and read the splits once, and each group's
result is committed as its own JSON file by an atomic rename, so an interrupted sweep resumes
without redoing a finished group.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np

from featcache.config import HeadConfig, SweepConfig, check_out_folder
from featcache.hashing import json_sha256
from featcache.progress import progress_bar
from featcache.training.head import EVAL_BATCH_ROWS, build_head, keras_batches
from featcache.training.head_files import HISTORY_KEYS, import_keras
from featcache.training.splits import Splits, load_splits

log = logging.getLogger(__name__)

RUNS_FOLDER = "runs"


@dataclass(frozen=True)
class Group:
    """Runs trained together: one learning rate, one seed, every (inner, dropout) of the grid."""

    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"lr={self.lr:g}_seed={self.seed}"


@dataclass
class SweepResult:
    """Every run's history, the ranking of configurations, the baseline's C sweep and the best head's folder."""

    out: Path
    runs: list[dict]
    ranking: list[dict]
    baseline: list[dict] = field(default_factory=list)
    best_head: Path | None = None
    trained: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """The top of the ranking and what was written: what ``featcache sweep`` prints."""
        lines = [f"sweep: {self.out}  ({len(self.runs)} runs, {self.trained} trained now, {self.seconds:.1f} s)"]
        for rank, row in enumerate(self.ranking[:5], start=1):
            lines.append(
                f"  {rank}. lr {row['lr']:g}, inner {row['inner']}, dropout {row['dropout']:g}: validation accuracy "
                f"{row['mean']:.4f} (sd {row['sd']:.4f}, {row['min']:.4f}-{row['max']:.4f}, {row['seeds']} seeds)"
            )
        if self.baseline:
            best = max(self.baseline, key=lambda r: r["val_accuracy"])
            lines.append(f"  logistic baseline: best C {best['C']:g}, validation accuracy {best['val_accuracy']:.4f}")
        if self.best_head is not None:
            lines.append(f"best head: {self.best_head}")
        lines.append(f"saved: {self.out / 'sweep.csv'}, sweep.json, sweep.md, plots")
        return "\n".join(lines)


def groups_of(config: SweepConfig) -> list[Group]:
    return [Group(lr, seed) for lr, seed in product(config.lr, range(config.seeds))]


def identity(config: SweepConfig, fingerprint: str) -> str:
    """What a committed group's results depend on, besides its learning rate and seed."""
    fields = {
        "cache": fingerprint,
        "inner": list(config.inner),
        "dropout": list(config.dropout),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "val_fraction": config.val_fraction,
        **({"augmented": True} if config.augmented else {}),  # sweeps without these keep their identity
        **({"drop_leaks": True} if config.drop_leaks else {}),
    }
    return json_sha256(fields)


def run_sweep(cache: str | Path, out: str | Path, config: SweepConfig, progress: bool = False) -> SweepResult:
    """Train every run of ``config`` on ``cache`` that ``out`` does not hold yet; rank, report, keep the best."""
    from featcache.training import sweep_report

    start, out = time.perf_counter(), Path(out)
    check_out_folder(out)
    splits = load_splits(cache, config.val_fraction, config.memory_budget, False, config.augmented, config.drop_leaks)
    tag = identity(config, splits.fingerprint)
    (out / RUNS_FOLDER).mkdir(parents=True, exist_ok=True)
    todo = [g for g in groups_of(config) if _committed(out, g, tag) is None]
    size = len(config.inner) * len(config.dropout)
    with progress_bar(len(groups_of(config)) * size, progress, "sweep") as bar:
        bar.update((len(groups_of(config)) - len(todo)) * size)
        _train_all(cache, out, config, tag, todo, splits, bar)
    runs = [run for g in groups_of(config) for run in _committed(out, g, tag)]
    result = SweepResult(out, runs, rank(runs), trained=len(todo) * size)
    if config.cs:
        result.baseline = sweep_report.baseline_sweep(splits, config.cs)
    result.best_head = sweep_report.best_head(cache, out, result.ranking[0], runs, config)
    sweep_report.write(result, config)
    result.seconds = time.perf_counter() - start
    return result


def _train_all(cache, out: Path, config: SweepConfig, tag: str, todo: list[Group], splits: Splits, bar) -> None:
    """Train the groups ``todo``, in this process (one job) or in ``config.jobs`` worker processes."""
    best = [0.0]

    def done(runs: list[dict]) -> None:
        best[0] = max([best[0]] + [r["best_val_accuracy"] for r in runs])
        bar.set_postfix_str(f"best {best[0]:.4f}")
        bar.update(len(runs))

    jobs = min(config.jobs, len(todo))
    if jobs <= 1:
        _limit_threads(os.cpu_count() or 1)
        for group in todo:
            done(commit(out, group, tag, train_group(splits, group, config)))
        return
    context = multiprocessing.get_context("spawn")
    args = (str(cache), str(out), config, tag, max(1, (os.cpu_count() or 1) // jobs))
    with context.Pool(jobs, initializer=_worker_start, initargs=args) as pool:
        for runs in pool.imap_unordered(_worker_train, todo):
            done(runs)


_WORKER: dict = {}


def _worker_start(cache: str, out: str, config: SweepConfig, tag: str, threads: int) -> None:
    """A worker process: TensorFlow started and the splits read once, for all the groups it trains."""
    _limit_threads(threads)
    splits = load_splits(cache, config.val_fraction, config.memory_budget, False, config.augmented, config.drop_leaks)
    _WORKER.update(splits=splits, out=Path(out), config=config, tag=tag, parent=os.getppid())


def _worker_train(group: Group) -> list[dict]:
    w = _WORKER
    if os.getppid() != w["parent"]:  # the sweep was killed: stop instead of training for nobody
        os._exit(1)
    return commit(w["out"], group, w["tag"], train_group(w["splits"], group, w["config"]))


def _limit_threads(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    except RuntimeError:  # TensorFlow already ran an op in this process; keep its threads
        pass


def train_group(splits: Splits, group: Group, config: SweepConfig) -> list[dict]:
    """Train the runs of ``group`` as branches of one model on the same batches; their per-epoch histories."""
    keras = import_keras()
    keras.utils.set_random_seed(group.seed)
    k, combos = len(splits.class_names), list(product(config.inner, config.dropout))
    inputs = keras.Input((splits.feature_dim,), name="features")
    outputs = [_branch(splits, i, inner, dropout, group, config)(inputs) for i, (inner, dropout) in enumerate(combos)]
    model = keras.Model(inputs, outputs, name="sweep_group")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=group.lr),
        loss=[keras.losses.CategoricalCrossentropy(from_logits=True)] * len(combos),
        metrics=[["accuracy"]] * len(combos),
    )
    train = splits.batches(splits.train, config.batch_size, shuffle=True, seed=group.seed)
    validation = splits.batches(splits.validation, max(config.batch_size, EVAL_BATCH_ROWS))
    start = time.perf_counter()
    try:
        fitted = model.fit(
            keras_batches(train, k, len(combos)),
            epochs=config.epochs,
            validation_data=keras_batches(validation, k, len(combos)),
            shuffle=False,
            verbose=0,
        )
    finally:
        train.vectors.close()
        validation.vectors.close()
    seconds = (time.perf_counter() - start) / len(combos)
    return [_run(fitted.history, i, inner, dropout, group, seconds) for i, (inner, dropout) in enumerate(combos)]


def _branch(splits: Splits, i: int, inner: int, dropout: float, group: Group, config: SweepConfig):
    head = HeadConfig(lr=group.lr, inner=(inner,) if inner else (), dropout=dropout, seed=group.seed)
    return build_head(splits.feature_dim, len(splits.class_names), head, name=f"run{i}")


def _run(history: dict, i: int, inner: int, dropout: float, group: Group, seconds: float) -> dict:
    """One run's record: its configuration and per-epoch train/validation accuracy and loss."""
    prefix = f"run{i}_" if f"run{i}_loss" in history else ""  # a model of one output names no output
    keys = {"accuracy": f"{prefix}accuracy", "loss": f"{prefix}loss"}
    keys |= {"val_" + k: "val_" + v for k, v in keys.items()}
    curves = {k: [float(v) for v in history[keys[k]]] for k in HISTORY_KEYS}
    best = int(np.argmax(curves["val_accuracy"]))
    return {
        "lr": group.lr,
        "inner": int(inner),
        "dropout": float(dropout),
        "seed": group.seed,
        "best_epoch": best + 1,
        "best_val_accuracy": curves["val_accuracy"][best],
        "val_loss_at_best": curves["val_loss"][best],
        "train_accuracy_at_best": curves["accuracy"][best],
        "seconds": round(seconds, 3),
        "history": curves,
    }


def commit(out: Path, group: Group, tag: str, runs: list[dict]) -> list[dict]:
    """Write ``runs`` as the group's result file, atomically."""
    path = out / RUNS_FOLDER / f"{group.name}.json"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"identity": tag, "lr": group.lr, "seed": group.seed, "runs": runs}))
    os.replace(tmp, path)
    return runs


def _committed(out: Path, group: Group, tag: str) -> list[dict] | None:
    """The runs of ``group`` committed by an earlier sweep with the same settings, or None."""
    path = out / RUNS_FOLDER / f"{group.name}.json"
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found["runs"] if found.get("identity") == tag else None


def rank(runs: list[dict]) -> list[dict]:
    """Configurations by mean best-epoch validation accuracy over seeds, best first, with the spread."""
    by_config: dict[tuple, list[float]] = {}
    for run in runs:
        by_config.setdefault((run["lr"], run["inner"], run["dropout"]), []).append(run["best_val_accuracy"])
    rows = []
    for (lr, inner, dropout), scores in by_config.items():
        a = np.asarray(scores)
        rows.append(
            {
                "lr": lr,
                "inner": inner,
                "dropout": dropout,
                "mean": float(a.mean()),
                "sd": float(a.std()),
                "min": float(a.min()),
                "max": float(a.max()),
                "seeds": len(a),
            }
        )
    return sorted(rows, key=lambda r: (-r["mean"], r["sd"], r["lr"], r["inner"], r["dropout"]))
