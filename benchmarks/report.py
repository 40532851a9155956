"""The benchmark's outputs: the table of targets, bench.json, bench.md and the bench.png chart."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

from featcache.versions import cpu_name

# (section, key, label, target text, test on the value); a label's {names} come from ``_context``,
# a value that is a spread over rounds ({"median", "min", "max", "rounds"}) is tested by its median
TARGETS = [
    (
        "time-saved",
        "lesson_speedup_head_epochs",
        "lesson recipe fit, {lesson_ten} / 10 head epochs fit (in process, start-up out; one run each; x faster)",
        ">= 100",
        lambda v: v >= 100,
    ),
    (
        "time-saved",
        "lesson_speedup_extract_plus_head",
        "lesson recipe, {lesson_ten} / (extract once + train-head) (whole processes, start-up in; one run each)",
        ">= 5",
        lambda v: v >= 5,
    ),
    (
        "time-saved",
        "lesson_accuracy_gap_same_epochs",
        "val accuracy: best of {lesson_k} head epochs - best of {lesson_k} lesson-recipe epochs",
        ">= -0.02",
        lambda v: v >= -0.02,
    ),
    (
        "stage-one",
        "featcache_vs_bare",
        "featcache extract / bare forward, same images per round (in process, images/s)",
        ">= 0.95",
        lambda v: v >= 0.95,
    ),
    (
        "stage-one",
        "featcache_vs_keras_pipeline",
        "featcache extract / Keras dataset + predict, same images per round (in process, images/s)",
        ">= 0.97",
        lambda v: v >= 0.97,
    ),
    (
        "process",
        "featcache_vs_bare_script",
        "featcache extract command / bare script, same images per round (whole processes, start-up in, images/s)",
        ">= 0.95",
        lambda v: v >= 0.95,
    ),
    (
        "process",
        "reextract_vs_full",
        "re-extract unchanged / full extract (whole processes, wall; one run each)",
        "<= 0.03",
        lambda v: v <= 0.03,
    ),
    (
        "precision",
        "bf16_extract_speedup",
        "bf16 extract / fp32 extract, same images per round (in process, images/s)",
        ">= 2.0",
        lambda v: v >= 2.0,
    ),
    ("precision", "bf16_cosine_mean", "cosine bf16 vs fp32: mean", ">= 0.9995", lambda v: v >= 0.9995),
    ("precision", "bf16_cosine_p1", "cosine bf16 vs fp32: 1st percentile", ">= 0.999", lambda v: v >= 0.999),
    ("precision", "bf16_cosine_min", "cosine bf16 vs fp32: min", ">= 0.995", lambda v: v >= 0.995),
    ("precision", "bf16_accuracy_gap", "head val accuracy, bf16 - fp32", ">= -0.01", lambda v: v >= -0.01),
    (
        "scale",
        "add_write_ratio",
        "add {added} images to a {rows}-row cache: bytes written (/proc/self/io) / (new vectors + entry file)",
        "<= 1.2",
        lambda v: v <= 1.2,
    ),
    (
        "scale",
        "add_time_ratio",
        "add {added} images: seconds on {rows} rows / on {small_rows} rows (in process)",
        "<= 3",
        lambda v: v <= 3,
    ),
    (
        "scale",
        "add_assume_unchanged_time_ratio",
        "add {added} images with --assume-unchanged: seconds on {rows} rows / on {small_rows} rows (in process)",
        "<= 3",
        lambda v: v <= 3,
    ),
    (
        "scale",
        "budget_rss_over_tensorflow_mb",
        "train-head 1 epoch, --memory-budget 1GB, {big_rows} rows: peak RSS - TensorFlow's baseline, MB",
        "<= 1536",
        lambda v: v <= 1536,
    ),
    (
        "scale",
        "memory_vs_budget_rate",
        "train-head 1 epoch, {big_rows} rows: train rows/s of fit, in memory / --memory-budget 1GB (medians)",
        "<= 2",
        lambda v: v <= 2,
    ),
    (
        "scale",
        "compare_rss_over_tensorflow_mb",
        "compare 1 epoch, --memory-budget 1GB, {big_rows} rows: peak RSS - TensorFlow's baseline, MB",
        "<= 1536",
        lambda v: v <= 1536,
    ),
    (
        "scale",
        "verify_rss_mb",
        "verify, {big_rows} rows: peak RSS, MB (fake backbone, no TensorFlow; rows skipped, no images)",
        "<= 1536",
        lambda v: v <= 1536,
    ),
]

# (section, key, label): measurements shown beside the targets, grouped by section
DETAILS = [
    ("startup", "tensorflow_import", "start-up: import tensorflow + keras, s (fresh process)"),
    ("startup", "weights_sha256", "start-up: sha256 of the weights file, s (featcache's fingerprint)"),
    ("startup", "model_build", "start-up: Xception + GAP built and weights loaded, s"),
    ("startup", "first_batch", "start-up: first batch of 32, s (traces the forward pass)"),
    ("startup", "steady_batch", "for scale: a later batch of 32, s"),
    ("startup", "openvino_conversion", "start-up: OpenVINO conversion, s (once per weights file, then cached)"),
    ("startup", "openvino_compile", "start-up: OpenVINO IR load + compile, s (every OpenVINO process)"),
    ("startup", "featcache_help_process", "featcache --help, whole process, s (no TensorFlow import)"),
    ("time-saved", "lesson_ten_fit_seconds", "lesson recipe: fit, {lesson_ten}, s (in process, start-up out)"),
    ("time-saved", "lesson_ten_process_seconds", "lesson recipe: whole process, {lesson_ten}, s (start-up in)"),
    ("time-saved", "lesson_import_seconds", "lesson recipe: start-up, import tensorflow, s"),
    ("time-saved", "lesson_build_seconds", "lesson recipe: start-up, generators + model with weights, s"),
    ("time-saved", "lesson_epoch_seconds", "lesson recipe: seconds per measured epoch (validation included)"),
    ("time-saved", "lesson_val_accuracy", "lesson recipe: val accuracy by epoch"),
    ("time-saved", "tf_data_ten_fit_seconds", "tf.data variant: fit, {tf_data_ten}, s (in process, start-up out)"),
    ("time-saved", "tf_data_ten_process_seconds", "tf.data variant: whole process, {tf_data_ten}, s (start-up in)"),
    ("time-saved", "tf_data_epoch_seconds", "tf.data variant: seconds per measured epoch (validation included)"),
    ("time-saved", "tf_data_val_accuracy", "tf.data variant: val accuracy by epoch"),
    (
        "time-saved",
        "tf_data_speedup_head_epochs",
        "tf.data variant fit, {tf_data_ten} / 10 head epochs fit (in process, start-up out)",
    ),
    (
        "time-saved",
        "tf_data_speedup_extract_plus_head",
        "tf.data variant, {tf_data_ten} / (extract once + train-head) (whole processes, start-up in)",
    ),
    (
        "time-saved",
        "tf_data_accuracy_gap_same_epochs",
        "val accuracy: best of {tf_data_k} head epochs - best of {tf_data_k} tf.data-variant epochs",
    ),
    ("time-saved", "head_fit_seconds", "train-head: fit of {head_epochs} epochs, s (in process, start-up out)"),
    ("time-saved", "head_process_seconds", "train-head: whole process, s (start-up in)"),
    ("time-saved", "extract_process_seconds", "featcache extract, full dataset: whole process, s (start-up in)"),
    ("time-saved", "head_val_accuracy_by_epoch", "train-head: val accuracy by epoch"),
    ("stage-one", "images_per_round", "images per round (interleaved subsets; every arm runs over the same ones)"),
    ("stage-one", "bare_fp32_rate", "bare forward (plain Keras, pre-decoded pixels), images/s per round"),
    ("stage-one", "featcache_fp32_rate", "featcache extract (in process, model built and warm), images/s per round"),
    (
        "stage-one",
        "keras_pipeline_fp32_rate",
        "Keras image_dataset_from_directory + predict (dataset built outside the timer), images/s per round",
    ),
    ("stage-one", "keras_pipeline_vs_bare", "Keras dataset + predict / bare forward (in process, images/s)"),
    ("stage-one", "featcache_fp32_time_in_forward", "share of featcache extract's wall time in forward passes"),
    ("stage-one", "rounds_others_share", "CPU share other processes took, worst run of each round"),
    ("process", "featcache_process_rate", "featcache extract command, images/s per round (whole process)"),
    ("process", "bare_script_process_rate", "bare script (benchmarks/bare_script.py), images/s per round"),
    ("process", "process_rounds_others_share", "CPU share other processes took, worst run of each round"),
    ("process", "full_extract_seconds", "full extract: whole process, s"),
    ("process", "full_extract_max_rss_mb", "full extract: peak RSS, MB (TensorFlow included)"),
    ("process", "full_extract_summary", "full extract summary"),
    ("process", "reextract_seconds", "re-extract unchanged: whole process, s"),
    ("memory", "n", "N: tiny synthetic JPEGs; featcache extract with a fake backbone, no TensorFlow"),
    ("memory", "rows_n_10n", "rows in the caches made at N and 10N"),
    ("memory", "max_rss_mb_n", "peak RSS at N images, MB (whole process)"),
    ("memory", "max_rss_mb_10n", "peak RSS at 10N images, MB (whole process)"),
    ("memory", "growth_mb_per_1000", "peak RSS growth per 1000 images, MB (N to 10N)"),
    ("memory", "vectors_mb_per_1000", "for scale: 1000 vectors of 2048 float32, MB"),
    ("precision", "cpu_native_bf16", "CPU has native bf16 (OpenVINO BF16 capability)"),
    ("precision", "images_per_round", "precision: images per round (the first of each stage-one subset)"),
    ("precision", "rates", "precision: images/s per round (bare = featcache's embed over pre-decoded pixels)"),
    ("precision", "bf16_bare_speedup", "bare bf16 / bare fp32 (in process, images/s)"),
    ("precision", "bf16_process_speedup", "bf16 / fp32 whole extract process, full dataset (one run each)"),
    ("precision", "bf16_process_summary", "bf16 extract process summary"),
    ("precision", "ov_fp32_extract_speedup", "OpenVINO fp32 / TensorFlow fp32 extract (in process, images/s)"),
    ("precision", "ov_fp32_bare_speedup", "OpenVINO fp32 / TensorFlow fp32 bare (in process, images/s)"),
    ("precision", "ov_fp32_process_speedup", "OpenVINO fp32 / TensorFlow fp32 whole extract process (one run each)"),
    ("precision", "ov_fp32_max_abs_diff", "OpenVINO fp32 vs TensorFlow fp32: max abs diff"),
    ("precision", "ov_fp32_accuracy_gap", "head val accuracy, OpenVINO fp32 - TensorFlow fp32"),
    ("precision", "fp32_head_val_accuracy", "head val accuracy, TensorFlow fp32"),
    ("scale", "add_written_mb", "add {added} images to {rows} rows: written, MB (whole operation)"),
    ("scale", "add_new_vectors_mb", "add {added} images: the new vectors, MB"),
    ("scale", "add_entry_file_mb", "add {added} images to {rows} rows: the entry file after, MB"),
    ("scale", "add_seconds", "add {added} images to {rows} rows: s (in process)"),
    ("scale", "add_seconds_small", "add {added} images to {small_rows} rows: s (in process)"),
    (
        "scale",
        "add_assume_unchanged_seconds",
        "add {added} images with --assume-unchanged to {rows} rows: s (in process)",
    ),
    (
        "scale",
        "add_assume_unchanged_seconds_small",
        "add {added} images with --assume-unchanged to {small_rows} rows: s (in process)",
    ),
    ("scale", "extract_rerun_rss_mb_per_100k", "extract rerun, nothing new: peak RSS growth, MB per 100k rows"),
    ("scale", "extract_add_rss_mb_per_100k", "extract, add {added} images: peak RSS growth, MB per 100k rows"),
    (
        "scale",
        "extract_rerun_rss_mb_per_100k_fixed_folders",
        "extract rerun, folders of {folder_rows} images: peak RSS growth, MB per 100k rows",
    ),
    (
        "scale",
        "extract_add_rss_mb_per_100k_fixed_folders",
        "extract, add {added} images, folders of {folder_rows}: peak RSS growth, MB per 100k rows",
    ),
    ("scale", "info_rss_mb_per_100k", "info: peak RSS growth, MB per 100k rows (synthetic caches)"),
    ("scale", "verify_rss_mb_per_100k", "verify: peak RSS growth, MB per 100k rows (synthetic caches)"),
    ("scale", "tensorflow_baseline_rss_mb", "TensorFlow's baseline: peak RSS, MB (plain Keras default head, tiny fit)"),
    (
        "scale",
        "train_head_memory_rows",
        "train-head 1 epoch in memory: rows of its cache (smaller when {big_rows} do not fit)",
    ),
    ("scale", "train_head_memory_rss_mb", "train-head 1 epoch in memory: peak RSS, MB (highest run)"),
    ("scale", "train_head_memory_rows_per_s", "train-head 1 epoch in memory: train rows/s of fit (median)"),
    ("scale", "train_head_budget_rss_mb", "train-head 1 epoch, --memory-budget 1GB: peak RSS, MB (highest run)"),
    (
        "scale",
        "train_head_budget_rows_per_s",
        "train-head 1 epoch, --memory-budget 1GB: train rows/s of fit (median)",
    ),
    (
        "scale",
        "memory_vs_budget_rate_runs",
        "train-head in memory / --memory-budget 1GB, run by run (they take turns)",
    ),
    ("scale", "compare_budget_rss_mb", "compare 1 epoch, --memory-budget 1GB: peak RSS, MB"),
]


def environment(data: Path, weights: str) -> dict:
    """What the numbers depend on: CPU, cores, load, versions, inputs."""
    flags = _cpu_flags()
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "load_average_start": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("featcache", "tensorflow", "keras", "openvino", "pillow", "h5py")},
        "data": str(data),
        "weights": weights,
    }


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


_SCALE_COUNTS = ("rows", "small_rows", "big_rows", "added", "folder_rows")


def _context(results: dict) -> dict:
    """What labels name: each recipe's 10-epoch basis (measured or extrapolated), the epochs compared."""
    saved, options, scale = results.get("time-saved", {}), results.get("options", {}), results.get("scale", {})
    return {
        "lesson_ten": saved.get("lesson_ten_label", "10 epochs"),
        "tf_data_ten": saved.get("tf_data_ten_label", "10 epochs"),
        "lesson_k": saved.get("lesson_accuracy_epochs", 10),
        "tf_data_k": saved.get("tf_data_accuracy_epochs", 10),
        "head_epochs": options.get("head_epochs", 10),
        **{key: f"{scale[key]:,}" if key in scale else "N" for key in _SCALE_COUNTS},
    }


def _headline(value):
    """The number a target is tested on: a spread's median, else the value itself."""
    return value["median"] if isinstance(value, dict) and "median" in value else value


def checks(results: dict, sections=None) -> list[dict]:
    """Each target (of ``sections``, default all) with its measured value and whether it is met (None when not
    measured)."""
    rows, context = [], _context(results)
    for section, key, label, target, test in TARGETS:
        if sections is not None and section not in sections:
            continue
        value = results.get(section, {}).get(key)
        rows.append(
            {
                "section": section,
                "key": key,
                "label": label.format(**context),
                "target": target,
                "value": value,
                "met": None if value is None else bool(test(_headline(value))),
            }
        )
    return rows


def table(results: dict, sections=None) -> str:
    """The targets and the measurements behind them (of ``sections``, default all), as Markdown tables."""
    lines = ["| measure | value | target | met |", "| --- | --- | --- | --- |"]
    for row in checks(results, sections):
        met = {True: "yes", False: "**no**", None: "not run"}[row["met"]]
        lines.append(f"| {row['label']} | {_fmt(row['value'])} | {row['target']} | {met} |")
    lines += ["", "| measurement | value |", "| --- | --- |"]
    context = _context(results)
    for section, key, label in DETAILS:
        value = results.get(section, {}).get(key)
        if value is not None and (sections is None or section in sections):
            lines.append(f"| {label.format(**context)} | {_fmt(value)} |")
    if "table" in results.get("scale", {}):  # the scale section's own table: one row per measured process
        lines += ["", results["scale"]["table"]]
    return "\n".join(lines + (_footer(results) if sections is None else []))


def _footer(results: dict) -> list[str]:
    """How busy the machine was, the CPU, and how to read the figures."""
    lines = [
        "",
        "Ratios over rounds: median (min, max; rounds), each round's ratio taken over the same images. "
        "In process: the model is built and warm before the timer starts. Whole process: wall time of a "
        "fresh process, start-up included.",
    ]
    shares = [v for v in results.get("others_cpu_share", {}).values() if v is not None]
    if shares:
        lines.append(
            f"CPU share taken by other processes during the timed runs: mean {sum(shares) / len(shares):.1%}, "
            f"max {max(shares):.1%} (per run in bench.json; above a few % the ratios are noisy)"
        )
    env = results.get("environment")
    if not env:
        return lines
    lines.append(
        f"CPU: {env.get('cpu')}, {env.get('cores')} cores, avx512_bf16 {env.get('avx512_bf16')}, "
        f"load average {_fmt(env.get('load_average_start'))} -> {_fmt(env.get('load_average_end'))}"
    )
    return lines


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict) and set(value) == {"median", "min", "max", "rounds"}:
        return f"{value['median']:.4g} (min {value['min']:.4g}, max {value['max']:.4g}; {value['rounds']} rounds)"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def write(out: Path, results: dict) -> str:
    """Write bench.json, bench.md and bench.png into ``out``; return the table."""
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "checks": checks(results)}
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = table(results)
    (out / "bench.md").write_text(text + "\n")
    chart(results, out / "bench.png")
    return text + f"\n\nwritten: {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}"


def chart(results: dict, path: Path) -> None:
    """Two panels: seconds to a trained head (log scale) and stage-one images/s (medians over rounds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    times = _times(results)
    if times:
        title = "Time to a trained head (whole processes)"
        _bars(left, list(times), list(times.values()), "seconds (log scale)", title, log=True)
    rates = _rates(results)
    if rates:
        _bars(right, list(rates), list(rates.values()), "images / s (median of rounds)", "Stage one throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _times(results: dict) -> dict:
    """Whole-process seconds of each way to a trained head, and the head's fit alone."""
    saved = results.get("time-saved", {})
    if "lesson_ten_process_seconds" not in saved:
        return {}
    context = {k: str(v).replace(" extrapolated", "\nextrapolated") for k, v in _context(results).items()}
    return {
        f"lesson recipe\n{context['lesson_ten']}": saved["lesson_ten_process_seconds"],
        f"tf.data variant\n{context['tf_data_ten']}": saved["tf_data_ten_process_seconds"],
        "featcache extract\n+ train-head": saved["extract_process_seconds"] + saved["head_process_seconds"],
        f"{context['head_epochs']} head epochs\n(fit only)": saved["head_fit_seconds"],
    }


def _rates(results: dict) -> dict:
    """Median images/s of each way to extract, over the rounds."""
    import statistics

    one, prec = results.get("stage-one", {}), results.get("precision", {})
    rates = {}
    if one:
        rates["bare fp32"] = statistics.median(one["bare_fp32_rate"])
        rates["Keras pipeline\nfp32"] = statistics.median(one["keras_pipeline_fp32_rate"])
        rates["featcache\nfp32"] = statistics.median(one["featcache_fp32_rate"])
    if "rates" in prec:
        rates["featcache fp32\nOpenVINO"] = statistics.median(prec["rates"]["ov-fp32"])
        rates["featcache bf16\nOpenVINO"] = statistics.median(prec["rates"]["bf16"])
    return rates


def _bars(ax, names, values, ylabel, title, log=False) -> None:
    bars = ax.bar(
        names, values, color=["#888888", "#2a7ab9", "#1b9e77", "#66a61e", "#d95f02", "#7570b3"][: len(values)]
    )
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
