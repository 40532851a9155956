"""Numbers at scale: adding images to a large cache, train-head under a memory budget, peak memory as rows grow.

    python -m benchmarks.scale                                  # 200,000-row image caches, a 1,000,000-row cache
    python -m benchmarks.scale --rows 20000 --big-rows 100000   # a small trial
    python -m benchmarks.bench --sections scale                 # the same, in the suite's report

Every operation runs in a fresh process (:mod:`benchmarks.scale_op`), so its peak RSS and the bytes
it writes (``/proc/self/io``) are its own; each is timed in process (the operation alone, imports
done) and as a whole process (start-up in). Only the processes that train import TensorFlow; the
others use the 2048-d fake backbone of :mod:`benchmarks.fake_extract`.

The inputs are made here, on disk (not tmpfs, where writes are not counted) in one work folder
that is deleted at the end, even on failure:

- tiny PNGs in ``train/<class>/`` folders, and their cache written directly through
  :mod:`featcache.cache`: rows with each file's real path, size, mtime and sha256 and the
  fingerprint extract computes for the fake backbone, so extract finds them unchanged; then
  ``--added`` new images, which extract computes and adds (``--small-rows``, ``--rows`` / 10 and
  ``--rows`` rows), ``--added`` more added by ``extract --assume-unchanged`` (which does not stat
  the files the cache holds), each add timed ``--repeats`` times on copies of the cache as it was
  (the median reported, with the spread), and a rerun that computes nothing;
- synthetic caches without images (``--big-rows`` / 10 and ``--big-rows`` rows, random vectors
  around one centre per class, written a shard at a time) for info, verify (every sampled row is
  skipped, its file being absent), train-head and compare. train-head runs in memory and with
  ``--memory-budget`` ``--repeats`` times each, taking turns, so that a slow spell of a shared
  machine falls on both; their rates are compared by medians, and run by run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np

from benchmarks import workloads as w
from benchmarks.fake_extract import FakeBackbone
from benchmarks.scale_op import EXTRACT_OPTIONS
from featcache.cache.layout import Locations, Rows, write_cache
from featcache.cache.shards import COPY_ROWS, ShardWriter, shards_dir
from featcache.config import ExtractConfig
from featcache.extraction.dataset import splits_for_hashes
from featcache.extraction.fingerprint import fingerprint_fields
from featcache.extraction.run import cache_attributes

ROOT = Path(__file__).resolve().parents[1]
DIM = FakeBackbone.dim
CLASSES = 10
#: rows per shard of a written cache, as compact writes them (64 MB at 2048-d)
SHARD_ROWS = COPY_ROWS
BUDGET = "1GB"
#: files per folder where extract's memory is measured with folders that do not grow with the rows
FOLDER_ROWS = 2_000
MB = 1 << 20
log = logging.getLogger("benchmarks")


class ScaleRun:
    """The work folder, and what was measured so far: operations, setup steps and notes."""

    def __init__(self, work: Path):
        self.work = work
        (work / "tmp").mkdir()
        self.operations: list[dict] = []
        self.setup: dict[str, float] = {}
        self.notes: list[str] = []

    @contextmanager
    def step(self, name: str):
        """Time a setup step and log it."""
        start = time.perf_counter()
        yield
        self.setup[name] = round(time.perf_counter() - start, 1)
        log.info("setup: %s in %.1f s", name, self.setup[name])

    def op(self, name: str, rows: int | None, *args: str, keep: bool = True, tree: Path = ROOT) -> dict | None:
        """Run ``benchmarks.scale_op ARGS`` in a fresh process that imports featcache (and benchmarks) from the
        source tree ``tree``; see :meth:`measure`. Run from a folder without a featcache package (as the work
        folder), or ``python -m`` finds the one in the current folder first."""
        return self.measure(name, rows, w.module_command("scale_op", *args), self.env(tree), keep)

    def env(self, tree: Path = ROOT) -> dict[str, str]:
        """A measured process's environment: ``tree`` first on the Python path, temporary files in the work folder."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env["TMPDIR"] = str(self.work / "tmp")  # what TensorFlow and featcache leave there goes with the work folder
        return env

    def measure(self, name: str, rows: int | None, command: list[str], env: dict, keep: bool = True) -> dict | None:
        """Run ``command``, whose last line of stdout is JSON with at least ``seconds`` and ``vm_hwm_mb``; its figures
        (kept in ``operations`` when ``keep``), or None (and a note) when it failed."""
        with w.OthersMeter() as meter:
            done = w.run_process(command, self.work, env)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            self.notes.append(f"{name} on {rows or 0:,} rows failed: {tail}")
            log.warning("%s failed: %s", name, done.stderr.strip()[-2000:])
            return None
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        record = {
            "operation": name,
            "rows": rows,
            "seconds": figures["seconds"],
            "process_seconds": round(done.seconds, 2),
            "peak_rss_mb": figures["vm_hwm_mb"],
            "written_mb": round(figures.get("write_bytes", 0) / MB, 2),
            "others_cpu_share": meter.share,
            **{k: v for k, v in figures.items() if k != "seconds"},
        }
        if keep:
            self.operations.append(record)
        log.info(
            "%s (%s rows): %.2f s in process, peak RSS %.0f MB", name, rows, record["seconds"], record["peak_rss_mb"]
        )
        return record


def cache_attrs(data_dir: Path, layout: str) -> dict:
    """The attributes extract records, with the fake backbone's fingerprint."""
    config = ExtractConfig(data_dir=data_dir, **EXTRACT_OPTIONS)
    return cache_attributes(config, layout, fingerprint_fields(config, FakeBackbone()))


def class_names() -> list[str]:
    return [f"class_{c:02d}" for c in range(CLASSES)]


def tiny_images(data: Path, n: int, prefix: str, seed: int, per_folder: int | None = None) -> Rows:
    """``n`` distinct 8x8 PNGs in ``data/train/<class>/`` (with ``per_folder``, in sub-folders
    ``part_0000``, ... of that many of them each), and their rows in the order extract lists them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows, made = Rows(), set()
    for label, name in enumerate(class_names()):
        for i in range(label, n, CLASSES):
            folder = data / "train" / name
            if per_folder:
                folder = folder / f"part_{i // CLASSES // per_folder:04d}"
            if folder not in made:
                folder.mkdir(parents=True, exist_ok=True)
                made.add(folder)
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                buffer, format="PNG", compress_level=1
            )
            path = folder / f"{prefix}_{i:07d}.png"
            path.write_bytes(buffer.getvalue())
            st = path.stat()
            rows.path.append(path.relative_to(data).as_posix())
            rows.sha256.append(hashlib.sha256(buffer.getvalue()).hexdigest())
            rows.label.append(label)
            rows.split.append("train")
            rows.size.append(st.st_size)
            rows.mtime_ns.append(st.st_mtime_ns)
    return rows


def synthetic_rows(n: int) -> Rows:
    """Rows of ``n`` images that do not exist, in train/validation/test by content hash as extract splits them."""
    rows, names = Rows(), class_names()
    for i in range(n):
        sha = hashlib.sha256(b"synthetic-%d" % i).hexdigest()
        split, label = splits_for_hashes([sha], 0.1, 0.1)[0].decode(), i % CLASSES
        rows.path.append(f"{split}/{names[label]}/img_{i:07d}.png")
        rows.sha256.append(sha)
        rows.label.append(label)
        rows.split.append(split)
        rows.size.append(200)
        rows.mtime_ns.append(0)
    return rows


def write_vectors(cache: Path, rows: Rows, attrs: dict, seed: int = 0) -> None:
    """Write the cache ``cache`` of ``rows`` with random vectors (a centre per class plus noise).

    One shard of SHARD_ROWS vectors is in memory at a time, so a cache of any size can be written.
    """
    rng = np.random.default_rng(seed)
    centres = 0.5 * rng.standard_normal((CLASSES, DIM), dtype=np.float32)
    writer, labels = ShardWriter(shards_dir(cache), attrs["fingerprint"]), np.asarray(rows.label)
    files, counts, sizes = [], [], []
    for start in range(0, len(rows), SHARD_ROWS):
        stop = min(start + SHARD_ROWS, len(rows))
        vectors = rng.standard_normal((stop - start, DIM), dtype=np.float32)
        vectors += centres[labels[start:stop]]
        shard = writer.write(rows.sha256[start:stop], vectors)
        files.append(shard.name)
        counts.append(stop - start)
        sizes.append(shard.stat().st_size)
    index = np.repeat(np.arange(len(files), dtype=np.int32), counts)
    row = np.concatenate([np.arange(c, dtype=np.int64) for c in counts] or [np.zeros(0, np.int64)])
    write_cache(cache, attrs, class_names(), rows, Locations(files, counts, sizes, index, row, DIM), [])


def adds(run: ScaleRun, sizes: list[int], added: int, repeats: int = 3) -> dict[int, dict]:
    """For each size: images and their cache, ``added`` new images added by extract, ``added`` more added with
    --assume-unchanged (each add timed ``repeats`` times on copies of the cache as it was), then a rerun
    that adds nothing."""
    found = {}
    for n in sizes:
        data, cache = run.work / f"images-{n}", run.work / f"cache-{n}" / "features.h5"
        with run.step(f"{n:,} tiny PNGs"):
            rows = tiny_images(data, n, "img", seed=n)
        with run.step(f"cache of {n:,} rows written directly"):
            write_vectors(cache, rows, cache_attrs(data, "split-folders"))
        with run.step(f"{added:,} new PNGs beside the {n:,}"):
            tiny_images(data, added, "new", seed=n + 1)
        if n == sizes[0]:  # the first process reads featcache's libraries from disk; the measured ones do not
            run.op("warm-up", n, "cli", "info", str(cache), keep=False)
        add = repeated_add(run, f"extract: add {added:,} images", n, cache, data, repeats)
        with run.step(f"{added:,} more new PNGs beside the {n + added:,}"):
            tiny_images(data, added, "more", seed=n + 2)
        name = f"extract --assume-unchanged: add {added:,} images"
        trusted = repeated_add(run, name, n + added, cache, data, repeats, "--assume-unchanged")
        rerun = run.op("extract: rerun, nothing new", n + 2 * added, "extract", str(data), str(cache))
        for record, computed in ((add, added), (trusted, added), (rerun, 0)):
            if record is not None and record["computed"] != computed:
                run.notes.append(f"extract on {n:,} rows computed {record['computed']}, expected {computed}")
        found[n] = {"add": add, "trusted": trusted, "rerun": rerun, "entry_bytes": cache.stat().st_size}
        with run.step(f"{n + added:,} PNGs and their cache deleted"):
            shutil.rmtree(data)
            shutil.rmtree(cache.parent)
    return found


def folder_memory(run: ScaleRun, sizes: list[int], added: int, per_folder: int) -> dict:
    """Extract's peak RSS as rows grow while folders do not: images in sub-folders of ``per_folder`` each, for
    each size an add of ``added`` images (once) and a rerun; MB per 100,000 rows of each."""
    found = {}
    for n in sizes:
        data, cache = run.work / f"parts-{n}", run.work / f"parts-cache-{n}" / "features.h5"
        with run.step(f"{n:,} tiny PNGs in folders of {per_folder:,}, their cache, {added:,} new PNGs"):
            write_vectors(cache, tiny_images(data, n, "img", n, per_folder), cache_attrs(data, "split-folders"))
            tiny_images(data, added, "new", n + 1, per_folder)
        where = f"folders of {per_folder:,}"
        found[n] = (
            run.op(f"extract: add {added:,} images, {where}", n, "extract", str(data), str(cache)),
            run.op(f"extract: rerun, nothing new, {where}", n + added, "extract", str(data), str(cache)),
        )
        with run.step(f"{n + added:,} PNGs in folders of {per_folder:,} and their cache deleted"):
            shutil.rmtree(data)
            shutil.rmtree(cache.parent)
    out = {"folder_rows": per_folder}
    names = ("extract_add_rss_mb_per_100k_fixed_folders", "extract_rerun_rss_mb_per_100k_fixed_folders")
    for k, name in enumerate(names):
        first, second = found[sizes[0]][k], found[sizes[-1]][k]
        if first is not None and second is not None:
            out[name] = per_100k(first, second)
    return out


def repeated_add(run: ScaleRun, name: str, rows: int, cache: Path, data: Path, repeats: int, *flags: str):
    """extract ``data`` into ``cache`` ``repeats`` times, each time into a copy of the cache as it is now
    (shards hard-linked: they are never changed); the last copy becomes the cache. The record of the run
    of median time, with every run's seconds (``seconds_runs``)."""
    records = []
    for k in range(repeats):
        trial = run.work / f"{cache.parent.name}-trial" / cache.name
        linked_copy(cache.parent, trial.parent)
        record = run.op(name, rows, "extract", *flags, str(data), str(trial), keep=False)
        if record is None:
            return None
        records.append(record)
        if k == repeats - 1:
            shutil.rmtree(cache.parent)
            trial.parent.rename(cache.parent)
        else:
            shutil.rmtree(trial.parent)
    median = sorted(records, key=lambda r: r["seconds"])[len(records) // 2]
    median = {**median, "seconds_runs": [r["seconds"] for r in records]}
    run.operations.append(median)
    return median


def linked_copy(source: Path, target: Path) -> None:
    """A copy of the folder ``source`` at ``target``: files in it copied, files in its sub-folders hard-linked."""
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_dir():
            shutil.copytree(item, target / item.name, copy_function=os.link)
        else:
            shutil.copy2(item, target / item.name)


def add_figures(found: dict[int, dict], rows: int, small: int, smaller: int, added: int) -> dict:
    """The add targets: bytes written against new vectors + entry file, time against the small cache."""
    out = {}
    add, entry = found[rows]["add"], found[rows]["entry_bytes"]
    if add is not None:
        expected = added * DIM * 4 + entry
        out |= {
            "add_written_mb": round(add["write_bytes"] / MB, 2),
            "add_new_vectors_mb": round(added * DIM * 4 / MB, 2),
            "add_entry_file_mb": round(entry / MB, 2),
            "add_write_ratio": round(add["write_bytes"] / expected, 3),
            "add_seconds": add["seconds"],
        }
    for key, name in (("add", "add"), ("trusted", "add_assume_unchanged")):
        large, small_add = found[rows][key], found[small][key]
        if large is not None and small_add is not None:
            out |= {
                f"{name}_seconds": large["seconds"],
                f"{name}_seconds_small": small_add["seconds"],
                f"{name}_time_ratio": round(large["seconds"] / small_add["seconds"], 2),
                f"{name}_seconds_runs": large["seconds_runs"],
                f"{name}_seconds_small_runs": small_add["seconds_runs"],
            }
    for key, name in (("rerun", "extract_rerun_rss_mb_per_100k"), ("add", "extract_add_rss_mb_per_100k")):
        runs = found[smaller][key], found[rows][key]
        if None not in runs:
            out[name] = per_100k(runs[0], runs[1])
    return out


def per_100k(first: dict, second: dict) -> float:
    """Peak RSS growth from ``first`` to ``second`` (two runs of one operation), MB per 100,000 rows."""
    return round((second["peak_rss_mb"] - first["peak_rss_mb"]) / (second["rows"] - first["rows"]) * 100_000, 1)


def synthetic_cache(run: ScaleRun, n: int) -> Path:
    cache = run.work / f"synthetic-{n}" / "features.h5"
    with run.step(f"synthetic cache of {n:,} rows ({n * DIM * 4 / 1e9:.1f} GB of vectors)"):
        write_vectors(cache, synthetic_rows(n), cache_attrs(run.work / "absent", "split-folders"))
    return cache


def readers(run: ScaleRun, big_rows: int, repeats: int = 3) -> dict:
    """info and verify on caches of ``big_rows`` / 10 and ``big_rows`` rows; train-head and compare on the larger
    (train-head in memory on the smaller one when the larger would not fit in memory)."""
    records: dict[str, list] = {"info": [], "verify": []}
    out, budgeted, caches = {}, has_memory_budget(), {}
    if not budgeted:
        run.notes.append(
            "train-head and compare with --memory-budget: not measured, this featcache has no --memory-budget "
            "option yet; train-head in memory measured as it is today"
        )
    for n in (big_rows // 10, big_rows):
        caches[n] = synthetic_cache(run, n)
        records["info"].append(run.op("info", n, "cli", "info", str(caches[n])))
        records["verify"].append(run.op("verify (no images: every sampled row skipped)", n, "verify", str(caches[n])))
    memory_rows = big_rows
    if in_memory_mb(big_rows) > available_mb():
        memory_rows = big_rows // 10
        run.notes.append(
            f"train-head in memory on {big_rows:,} rows would need about {in_memory_mb(big_rows):,.0f} MB, "
            f"{available_mb():,.0f} MB are available: measured on {memory_rows:,} rows instead (a head's rows/s "
            f"hardly depend on the rows)"
        )
    out |= training(run, caches, big_rows, memory_rows, budgeted, repeats)
    with run.step("synthetic caches deleted"):
        for cache in caches.values():
            shutil.rmtree(cache.parent)
    for name, (first, second) in records.items():
        if first is not None and second is not None:
            out[f"{name}_rss_mb_per_100k"] = per_100k(first, second)
    if records["verify"][1] is not None:
        out["verify_rss_mb"] = records["verify"][1]["peak_rss_mb"]
    return out


def has_memory_budget() -> bool:
    """Whether this featcache's train-head takes ``--memory-budget``."""
    done = subprocess.run([*w.featcache_command("train-head", "--help")], capture_output=True, text=True, cwd=ROOT)
    return "--memory-budget" in done.stdout


def available_mb() -> float:
    """MemAvailable of this machine, MB (infinite where /proc/meminfo is absent)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.inf


def in_memory_mb(n: int) -> float:
    """About what train-head needs with ``n`` rows in memory, MB: three times the vectors (the cache read
    whole, the split copies, Keras' own; 2.5 times measured at 100,000 rows) and TensorFlow."""
    return 3 * n * DIM * 4 / MB + 3000


def training(run: ScaleRun, caches: dict[int, Path], n: int, memory_rows: int, budgeted: bool, repeats: int) -> dict:
    """TensorFlow's baseline; train-head for 1 epoch in memory (on the cache of ``memory_rows`` rows) and with
    --memory-budget (on the cache of ``n`` rows), taking turns ``repeats`` times, for the medians of their
    rates; compare with --memory-budget."""
    out = {}
    baseline = run.op(
        "TensorFlow baseline: default head compiled, fitted on 256 rows", None, "tf-baseline", str(CLASSES)
    )
    if baseline is not None:
        out["tensorflow_baseline_rss_mb"] = baseline["peak_rss_mb"]
    fits = {"memory": [], "budget": []}
    for _ in range(repeats if budgeted else 1):
        if in_memory_mb(memory_rows) <= available_mb():
            flags = budget_flags(memory_rows) if budgeted else []
            fits["memory"].append(train_head(run, caches[memory_rows], memory_rows, "in memory", flags))
        if budgeted:
            flags = ["--memory-budget", BUDGET]
            fits["budget"].append(train_head(run, caches[n], n, f"--memory-budget {BUDGET}", flags))
    if not fits["memory"]:
        run.notes.append(f"train-head in memory on {memory_rows:,} rows: skipped, needs about "
                         f"{in_memory_mb(memory_rows):,.0f} MB")  # fmt: skip
    in_memory, limited = median_fit(run, fits["memory"]), median_fit(run, fits["budget"])
    if in_memory:
        out |= {
            "train_head_memory_rows": in_memory["rows"],
            "train_head_memory_rss_mb": in_memory["peak_rss_mb"],
            "train_head_memory_rows_per_s": in_memory["rate"],
            "train_head_memory_rows_per_s_runs": in_memory["rate_runs"],
        }
    if limited:
        out |= {
            "train_head_budget_rss_mb": limited["peak_rss_mb"],
            "train_head_budget_rows_per_s": limited["rate"],
            "train_head_budget_rows_per_s_runs": limited["rate_runs"],
        }
    if not budgeted:
        return out
    compared = run.op(
        f"compare --epochs 1 --memory-budget {BUDGET}", n, "cli", "--keras", "compare", str(caches[n]),
        "-o", str(run.work / "compare"), "--epochs", "1", "--memory-budget", BUDGET,
    )  # fmt: skip
    if compared is not None:
        out["compare_budget_rss_mb"] = compared["peak_rss_mb"]
    return out | over_baseline(out)


def median_fit(run: ScaleRun, fits: list[dict | None]) -> dict | None:
    """The record of the fit of median rate among ``fits`` (failed ones left out), with every run's rate
    (``rate_runs``) and seconds, and the highest peak RSS of them all; kept in the operations."""
    done = [fit for fit in fits if fit is not None]
    if not done:
        return None
    median = sorted(done, key=lambda fit: fit["rate"])[len(done) // 2]
    median = {
        **median,
        "rate_runs": [fit["rate"] for fit in done],
        "seconds_runs": [fit["seconds"] for fit in done],
        "peak_rss_mb": max(fit["peak_rss_mb"] for fit in done),
    }
    run.operations.append(median)
    return median


def budget_flags(n: int) -> list[str]:
    """A --memory-budget of twice the vectors of ``n`` rows, so that train-head keeps them in memory."""
    return ["--memory-budget", f"{math.ceil(2 * n * DIM * 4 / 1e9) + 1}GB"]


def train_head(run: ScaleRun, cache: Path, n: int, label: str, flags: list[str]) -> dict | None:
    """train-head for 1 epoch with ``flags``; its record with ``rate``, train rows per second of fit (not kept in
    the operations: :func:`median_fit` keeps the median of several)."""
    head = run.work / "head"
    args = ("cli", "--keras", "train-head", str(cache), "-o", str(head), "--epochs", "1", *flags)
    record = run.op(f"train-head --epochs 1, {label}", n, *args, keep=False)
    if record is None:
        return None
    metrics = json.loads((head / "head.json").read_text())["metrics"]
    record |= {"n_train": metrics["n_train"], "fit_seconds": metrics["fit_seconds"]}
    record["rate"] = round(metrics["n_train"] / metrics["fit_seconds"], 1)
    shutil.rmtree(head)
    return record


def over_baseline(out: dict) -> dict:
    """Peaks above TensorFlow's own, and the in-memory rate against the budgeted one."""
    found = {}
    base = out.get("tensorflow_baseline_rss_mb")
    for key, name in (("train_head_budget_rss_mb", "budget"), ("compare_budget_rss_mb", "compare")):
        if base is not None and key in out:
            found[f"{name}_rss_over_tensorflow_mb"] = round(out[key] - base, 1)
    if "train_head_memory_rows_per_s" in out and "train_head_budget_rows_per_s" in out:
        found["memory_vs_budget_rate"] = round(
            out["train_head_memory_rows_per_s"] / out["train_head_budget_rows_per_s"], 2
        )
        pairs = zip(out["train_head_memory_rows_per_s_runs"], out["train_head_budget_rows_per_s_runs"], strict=False)
        found["memory_vs_budget_rate_runs"] = [round(memory / budget, 2) for memory, budget in pairs]
    return found


def filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on (from /proc/mounts; "" where unknown)."""
    best, kind = "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    resolved = str(path.resolve())
    for line in mounts:
        _, point, fstype = line.split()[:3]
        if (resolved == point or resolved.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, kind = point, fstype
    return kind


def run(
    work: Path,
    rows: int = 200_000,
    big_rows: int = 1_000_000,
    small_rows: int = 2_000,
    added: int = 1_000,
    repeats: int = 3,
) -> dict:
    """Every measurement of the section in the new folder ``work``, which is deleted at the end."""
    work.mkdir(parents=True)
    try:
        if filesystem(work) in ("tmpfs", "ramfs"):
            raise click.UsageError(
                f"{work} is on {filesystem(work)}, where writes are not counted; choose a folder on disk"
            )
        scale = ScaleRun(work)
        result: dict = {"rows": rows, "small_rows": small_rows, "added": added, "big_rows": big_rows}
        found = adds(scale, sorted({small_rows, rows // 10, rows}), added, repeats)
        result |= add_figures(found, rows, small_rows, rows // 10, added)
        result |= folder_memory(scale, [rows // 10, rows], added, FOLDER_ROWS)
        result |= readers(scale, big_rows, repeats)
        result |= {"setup_seconds": scale.setup, "operations": scale.operations, "notes": scale.notes}
        result["table"] = operations_table(scale)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def operations_table(scale: ScaleRun) -> str:
    """Every operation's figures, the setup steps' seconds and the notes, as Markdown."""
    lines = [
        "| operation (fresh process) | rows | in process, s | whole process, s | peak RSS, MB | written, MB "
        "| others' CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in scale.operations:
        share = "-" if r["others_cpu_share"] is None else f"{r['others_cpu_share']:.0%}"
        rows = "-" if r["rows"] is None else f"{r['rows']:,}"
        runs = r.get("seconds_runs", [])
        spread = f" ({min(runs):.2f}-{max(runs):.2f}, median of {len(runs)})" if len(runs) > 1 else ""
        lines.append(
            f"| {r['operation']} | {rows} | {r['seconds']:.2f}{spread} | {r['process_seconds']:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {r['written_mb']:.1f} | {share} |"
        )
    lines += [
        "",
        "In process: the operation alone, the imports it needs (TensorFlow's too) done before the timer; whole "
        "process: start-up included. Peak RSS: the whole process's VmHWM, read when the operation ends (not "
        "wait4's ru_maxrss, which on Linux also holds the parent's peak from before exec). Written: "
        "/proc/self/io write_bytes during the operation. Others' CPU: the share of all cores other processes "
        "took meanwhile.",
    ]
    lines += ["", "| setup step (not measured) | seconds |", "| --- | ---: |"]
    lines += [f"| {step} | {seconds:.1f} |" for step, seconds in scale.setup.items()]
    return "\n".join(lines + [""] + [f"- {note}" for note in scale.notes])


@click.command()
@click.option(
    "--rows",
    type=click.IntRange(10),
    default=200_000,
    show_default=True,
    help="Rows of the cache that gets new images; extract's peak RSS is taken at rows/10 and rows.",
)
@click.option(
    "--small-rows",
    type=click.IntRange(1),
    default=2_000,
    show_default=True,
    help="Rows of the cache the add is timed against.",
)
@click.option("--added", type=click.IntRange(1), default=1_000, show_default=True, help="New images added.")
@click.option(
    "--repeats",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Times each add is timed, on copies of the cache as it was, and train-head run in memory and with "
    "--memory-budget, taking turns; the medians are reported.",
)
@click.option(
    "--big-rows",
    type=click.IntRange(10),
    default=1_000_000,
    show_default=True,
    help="Rows of the synthetic cache of train-head and compare; info and verify also run at big-rows/10.",
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to work in (default: the system's temporary folder); deleted at the end.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the figures as JSON here.",
)
def main(rows, small_rows, added, repeats, big_rows, work, json_out):
    """Measure featcache at scale: an add to a large cache, train-head under a memory budget, peak RSS as rows grow."""
    from benchmarks import report

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    parent = Path(work or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="featcache-scale-", dir=parent))
    folder.rmdir()  # run() makes it and deletes it
    result = run(folder, rows, big_rows, small_rows, added, repeats)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    click.echo(report.table({"scale": result}, sections=("scale",)))


if __name__ == "__main__":
    main()
