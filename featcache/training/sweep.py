"""``featcache sweep``: train every head configuration of a grid for several seeds, rank them, keep the best.

A run is one configuration (learning rate, inner layer size, dropout) and one seed. Runs of one seed
see the same batches, so runs of one seed and one inner size are trained together as the branches of
:mod:`featcache.training.branches` — one pass over the data for all, each branch learning as
``fit_head`` would train its configuration alone. A group holds at most :data:`GROUP_WEIGHTS`
weights (the 1000-unit runs of the lesson's grid go four to a group), so the heavy groups spread
over the workers. Groups run, heaviest first, in ``jobs`` worker processes that each start
TensorFlow and read the splits once, and each group's result is committed as its own JSON file by
an atomic rename, so an interrupted sweep resumes without redoing a finished group.
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

from featcache.config import SweepConfig, check_out_folder
from featcache.hashing import json_sha256
from featcache.progress import progress_bar
from featcache.training.branches import Branch, train_branches
from featcache.training.head_files import HISTORY_KEYS
from featcache.training.labels import label_issue_rows
from featcache.training.splits import Splits, load_splits

log = logging.getLogger(__name__)

RUNS_FOLDER = "runs"
#: the most weights one group trains at once: 4 Dense(2048 -> 1000) branches
GROUP_WEIGHTS = 8_500_000
#: how runs are trained; part of every committed group's identity
TRAINER = "branches-1"


@dataclass(frozen=True)
class Group:
    """Runs trained together: one seed, one inner size, and ``branches`` (learning rate, dropout) of the grid."""

    seed: int
    inner: int
    branches: tuple[Branch, ...]
    part: int = 1
    parts: int = 1

    @property
    def name(self) -> str:
        return f"seed={self.seed}_inner={self.inner}_part={self.part}of{self.parts}"

    def cost(self, feature_dim: int, n_classes: int) -> int:
        return sum(b.weights(feature_dim, n_classes) for b in self.branches)


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
    label_issues_dropped: int = 0  # train rows left out as likely mislabelled

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
        if self.label_issues_dropped:
            lines.append(f"  trained without {self.label_issues_dropped} likely mislabelled train rows")
        if self.best_head is not None:
            lines.append(f"best head: {self.best_head}")
        lines.append(f"saved: {self.out / 'sweep.csv'}, sweep.json, sweep.md, plots")
        return "\n".join(lines)


def groups_of(config: SweepConfig, feature_dim: int, n_classes: int) -> list[Group]:
    """The grid's runs in groups, heaviest first: per seed and inner size, the (lr, dropout) pairs in
    parts of at most :data:`GROUP_WEIGHTS` weights."""
    groups = []
    for seed, inner in product(range(config.seeds), config.inner):
        branches = [Branch(lr, inner, dropout) for lr, dropout in product(config.lr, config.dropout)]
        per_part = max(1, GROUP_WEIGHTS // branches[0].weights(feature_dim, n_classes))
        parts = -(-len(branches) // per_part)
        for part in range(parts):
            chunk = tuple(branches[part * per_part : (part + 1) * per_part])
            groups.append(Group(seed, inner, chunk, part + 1, parts))
    return sorted(groups, key=lambda g: -g.cost(feature_dim, n_classes))


def identity(config: SweepConfig, fingerprint: str, label_issues: np.ndarray) -> str:
    """What a committed group's results depend on, besides its learning rate and seed (``label_issues``: the
    train rows left out)."""
    fields = {
        "cache": fingerprint,
        "inner": list(config.inner),
        "dropout": list(config.dropout),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        # the former names of holdout_fraction and with_views, kept so that committed runs are still reused
        "val_fraction": config.holdout_fraction,
        "trainer": TRAINER,
        **({"augmented": True} if config.with_views else {}),  # sweeps without these keep their identity
        **({"drop_leaks": True} if config.drop_leaks else {}),
        **({"label_issues": label_issues.tolist()} if len(label_issues) else {}),
    }
    return json_sha256(fields)


def run_sweep(cache: str | Path, out: str | Path, config: SweepConfig, progress: bool = False) -> SweepResult:
    """Train every run of ``config`` on ``cache`` that ``out`` does not hold yet; rank, report, keep the best."""
    from featcache.training import sweep_report

    start, out = time.perf_counter(), Path(out)
    check_out_folder(out)
    splits = load_splits(
        cache, config.holdout_fraction, config.memory_budget, False, config.with_views, config.drop_leaks,
        label_issues=label_issue_rows(cache, config.drop_label_issues),
    )  # fmt: skip
    tag = identity(config, splits.fingerprint, splits.label_issues)
    (out / RUNS_FOLDER).mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out / RUNS_FOLDER)
    groups = groups_of(config, splits.feature_dim, len(splits.class_names))
    todo = [g for g in groups if _committed(out, g, tag) is None]
    trained = sum(len(g.branches) for g in todo)
    with progress_bar(sum(len(g.branches) for g in groups), progress, "sweep") as bar:
        bar.update(sum(len(g.branches) for g in groups) - trained)
        _train_all(cache, out, config, tag, todo, splits, bar)
    runs = sorted((run for g in groups for run in _committed(out, g, tag)), key=_grid_order)
    result = SweepResult(out, runs, rank(runs), trained=trained, label_issues_dropped=len(splits.label_issues))
    if config.baseline_c:
        result.baseline = sweep_report.baseline_sweep(splits, config.baseline_c)
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

    jobs = min(config.jobs, len(todo))  # todo is heaviest first, and each worker takes the next when free
    if jobs <= 1:
        _limit_threads(os.cpu_count() or 1)
        for group in todo:
            done(commit(out, group, tag, train_group(splits, group, config)))
        return
    context = multiprocessing.get_context("spawn")
    # leaks and label issues found once, here: a worker reads the splits without searching again
    found = (splits.leaking_rows.tolist(), splits.label_issues.tolist())
    args = (str(cache), str(out), config, tag, max(1, (os.cpu_count() or 1) // jobs), found)
    with context.Pool(jobs, initializer=_worker_start, initargs=args) as pool:
        for runs in pool.imap_unordered(_worker_train, todo, chunksize=1):
            done(runs)


_WORKER: dict = {}


def _worker_start(cache: str, out: str, config: SweepConfig, tag: str, threads: int, found: tuple) -> None:
    """A worker process: TensorFlow started and the splits read once, for all the groups it trains."""
    _limit_threads(threads)
    options = (config.holdout_fraction, config.memory_budget, False, config.with_views, config.drop_leaks)
    leaking, label_issues = (np.asarray(rows, dtype=np.int64) for rows in found)
    splits = load_splits(cache, *options, leaking=leaking, label_issues=label_issues)
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
    """Train the runs of ``group`` together on the same batches; their per-epoch histories."""
    start = time.perf_counter()
    fits = train_branches(splits, list(group.branches), group.seed, config.epochs, config.batch_size)
    seconds = (time.perf_counter() - start) / len(fits)
    return [_run(fit.history, fit.branch, group.seed, seconds) for fit in fits]


def _run(curves: dict, branch: Branch, seed: int, seconds: float) -> dict:
    """One run's record: its configuration and per-epoch train/validation accuracy and loss."""
    curves = {k: [float(v) for v in curves[k]] for k in HISTORY_KEYS}
    best = int(np.argmax(curves["val_accuracy"]))
    return {
        "lr": branch.lr,
        "inner": int(branch.inner),
        "dropout": float(branch.dropout),
        "seed": seed,
        "best_epoch": best + 1,
        "best_val_accuracy": curves["val_accuracy"][best],
        "val_loss_at_best": curves["val_loss"][best],
        "train_accuracy_at_best": curves["accuracy"][best],
        "seconds": round(seconds, 3),
        "history": curves,
    }


def _grid_order(run: dict) -> tuple:
    return run["lr"], run["inner"], run["dropout"], run["seed"]


def commit(out: Path, group: Group, tag: str, runs: list[dict]) -> list[dict]:
    """Write ``runs`` as the group's result file, atomically."""
    path = out / RUNS_FOLDER / f"{group.name}.json"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"identity": tag, "seed": group.seed, "inner": group.inner, "runs": runs}))
    os.replace(tmp, path)
    return runs


def _remove_leftovers(folder: Path) -> None:
    """Delete the result files that sweeps killed before their rename left half-written (``commit``'s
    temporaries of processes no longer running; a sweep running beside this one keeps its own)."""
    for path in folder.glob(".*.json.tmp-*"):
        pid = path.name.rpartition("-")[2]
        if pid.isdigit() and not _running(int(pid)):
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _committed(out: Path, group: Group, tag: str) -> list[dict] | None:
    """The runs of ``group`` committed by an earlier sweep with the same settings and runs, or None."""
    path = out / RUNS_FOLDER / f"{group.name}.json"
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if found.get("identity") != tag:
        return None
    runs = [(r["lr"], r["inner"], r["dropout"]) for r in found["runs"]]
    return found["runs"] if runs == [(b.lr, b.inner, b.dropout) for b in group.branches] else None


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
