"""The benchmark's outputs: the table of targets, bench.json, bench.md and the bench.png chart."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

from benchmarks.workloads import DISTURBED

# (section, key, label, target text, test on the value)
TARGETS = [
    (
        "time-saved",
        "speedup_head_epochs",
        "10 head epochs vs 10 recipe epochs (x faster)",
        ">= 100",
        lambda v: v >= 100,
    ),
    (
        "time-saved",
        "speedup_extract_plus_head",
        "extract once + 10 head epochs vs 10 recipe epochs",
        ">= 5",
        lambda v: v >= 5,
    ),
    (
        "time-saved",
        "accuracy_gap_best",
        "val accuracy, best of 10 head epochs - best recipe epoch",
        ">= -0.02",
        lambda v: v >= -0.02,
    ),
    (
        "stage-one",
        "featcache_vs_bare",
        "fp32 extract / bare forward (median of rounds)",
        ">= 0.95",
        lambda v: v >= 0.95,
    ),
    (
        "stage-one",
        "featcache_vs_keras_pipeline",
        "fp32 extract / Keras dataset+predict (median of rounds)",
        ">= 0.97",
        lambda v: v >= 0.97,
    ),
    ("process", "reextract_vs_full", "re-extract unchanged / full extract (wall)", "<= 0.03", lambda v: v <= 0.03),
    ("memory", "growth", "peak RSS growth from N to 5N images", "<= 0.10", lambda v: v <= 0.10),
    (
        "precision",
        "bf16_extract_speedup",
        "bf16 extract / fp32 extract (median of rounds)",
        ">= 2.0",
        lambda v: v >= 2.0,
    ),
    ("precision", "bf16_extract_vs_keras_pipeline", "bf16 extract / Keras pipeline fp32", ">= 2.0", lambda v: v >= 2.0),
    ("precision", "bf16_cosine_mean", "cosine bf16 vs fp32: mean", ">= 0.9995", lambda v: v >= 0.9995),
    ("precision", "bf16_cosine_p1", "cosine bf16 vs fp32: 1st percentile", ">= 0.999", lambda v: v >= 0.999),
    ("precision", "bf16_cosine_min", "cosine bf16 vs fp32: min", ">= 0.995", lambda v: v >= 0.995),
    ("precision", "bf16_accuracy_gap", "head val accuracy, bf16 - fp32", ">= -0.01", lambda v: v >= -0.01),
]

# (section, key, label): measurements shown beside the targets
DETAILS = [
    ("time-saved", "recipe_epoch_seconds", "recipe seconds per epoch"),
    ("time-saved", "head_epoch_seconds", "head seconds per epoch (fit)"),
    ("time-saved", "recipe_10_epochs_seconds", "recipe 10 epochs, s (10 x its fastest epoch)"),
    ("time-saved", "extract_process_seconds", "featcache extract process, s"),
    ("time-saved", "head_process_seconds", "featcache train-head process, s"),
    ("time-saved", "recipe_val_accuracy", "recipe val accuracy by epoch"),
    ("time-saved", "head_val_accuracy_by_epoch", "head val accuracy by epoch"),
    ("time-saved", "accuracy_gap_same_epochs", "val accuracy, best of the recipe's first epochs: head - recipe"),
    ("stage-one", "images_per_round", "images per round (interleaved subsets of the dataset)"),
    ("stage-one", "rounds_disturbed_share", "CPU share other processes took, worst run of each round"),
    ("stage-one", "rounds_in_medians", f"rounds in the medians (others took <= {DISTURBED:.0%} of the CPU)"),
    ("stage-one", "featcache_vs_bare_all_rounds", "fp32 extract / bare forward, median of all rounds"),
    ("stage-one", "bare_fp32_rate", "bare fp32 forward, images/s, per round"),
    ("stage-one", "featcache_fp32_rate", "featcache extract fp32 (in process), images/s, per round"),
    ("stage-one", "keras_pipeline_fp32_rate", "Keras dataset+predict fp32, images/s, per round"),
    ("stage-one", "keras_pipeline_vs_bare", "Keras pipeline / bare (median of rounds)"),
    ("stage-one", "featcache_fp32_time_in_forward", "share of featcache extract's wall time in forward passes"),
    ("process", "full_extract_seconds", "full extract process, s"),
    ("process", "full_extract_summary", "full extract summary"),
    ("process", "reextract_seconds", "re-extract process, s"),
    ("memory", "max_rss_mb_n", "peak RSS at N images, MB"),
    ("memory", "max_rss_mb_5n", "peak RSS at 5N images, MB"),
    ("precision", "cpu_native_bf16", "CPU has native bf16 (OpenVINO BF16 capability)"),
    ("precision", "rates", "images/s per round"),
    ("precision", "rounds_in_medians", "precision rounds in the medians"),
    ("precision", "bf16_bare_speedup", "bare bf16 / bare fp32 (median of rounds)"),
    ("precision", "bf16_process_speedup", "bf16 / fp32 whole extract process, full dataset"),
    ("precision", "bf16_process_summary", "bf16 extract process summary"),
    ("precision", "ov_fp32_extract_speedup", "OpenVINO fp32 / TensorFlow fp32 extract (median of rounds)"),
    ("precision", "ov_fp32_bare_speedup", "OpenVINO fp32 / TensorFlow fp32 bare (median of rounds)"),
    ("precision", "ov_fp32_process_speedup", "OpenVINO fp32 / TensorFlow fp32 whole extract process"),
    ("precision", "ov_fp32_extract_vs_keras_pipeline", "OpenVINO fp32 extract / Keras pipeline fp32"),
    ("precision", "ov_fp32_max_abs_diff", "OpenVINO fp32 vs TensorFlow fp32: max abs diff"),
    ("precision", "ov_fp32_accuracy_gap", "head val accuracy, OpenVINO fp32 - TensorFlow fp32"),
    ("precision", "fp32_head_val_accuracy", "head val accuracy, TensorFlow fp32"),
]


def environment(data: Path, weights: str) -> dict:
    """What the numbers depend on: CPU, cores, load, versions, inputs."""
    flags = _cpu_flags()
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": _cpu_model(),
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


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    line = next((x for x in text.splitlines() if x.startswith("model name")), "")
    return line.split(":", 1)[-1].strip()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def checks(results: dict) -> list[dict]:
    """Each target with its measured value and whether it is met (None when not measured)."""
    rows = []
    for section, key, label, target, test in TARGETS:
        value = results.get(section, {}).get(key)
        rows.append(
            {
                "section": section,
                "key": key,
                "label": label,
                "target": target,
                "value": value,
                "met": None if value is None else bool(test(value)),
            }
        )
    return rows


def table(results: dict) -> str:
    """The targets and the measurements behind them, as a Markdown table."""
    lines = ["| measure | value | target | met |", "| --- | --- | --- | --- |"]
    for row in checks(results):
        met = {True: "yes", False: "**no**", None: "not run"}[row["met"]]
        lines.append(f"| {row['label']} | {_fmt(row['value'])} | {row['target']} | {met} |")
    lines += ["", "| measurement | value |", "| --- | --- |"]
    for section, key, label in DETAILS:
        value = results.get(section, {}).get(key)
        if value is not None:
            lines.append(f"| {label} | {_fmt(value)} |")
    shares = [v for v in results.get("others_cpu_share", {}).values() if v is not None]
    if shares:
        lines += [
            "",
            f"CPU share taken by other processes during the timed runs: mean {sum(shares) / len(shares):.1%}, "
            f"max {max(shares):.1%} (per run in bench.json; above a few % the ratios are noisy)",
        ]
    env = results.get("environment", {})
    lines += [
        "",
        f"CPU: {env.get('cpu')}, {env.get('cores')} cores, avx512_bf16 {env.get('avx512_bf16')}, "
        f"load average {_fmt(env.get('load_average_start'))} -> {_fmt(env.get('load_average_end'))}",
    ]
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
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
    """Two panels: seconds for 10 epochs (log scale) and stage-one images/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    saved = results.get("time-saved", {})
    if saved:
        names = ["recipe\n10 epochs", "featcache\n10 head epochs", "featcache\nextract + train-head"]
        values = [
            saved["recipe_10_epochs_seconds"],
            saved["head_fit_seconds"],
            saved["extract_process_seconds"] + saved["head_process_seconds"],
        ]
        _bars(left, names, values, "seconds (log scale)", "Time to a trained head", log=True)
    rates = _rates(results)
    if rates:
        _bars(right, list(rates), list(rates.values()), "images / s", "Stage one throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
