"""Run the benchmark suite: featcache against the reference recipe and the bare model, in one run.

    python -m benchmarks.bench            # or: make bench
    python -m benchmarks.bench --sections stage-one,precision

Prints a table, and writes ``bench.json``, ``bench.md`` and ``bench.png`` into ``--out``
(``bench-results/``). Data and weights default to ``$FEATCACHE_DATA`` / ``$FEATCACHE_WEIGHTS``,
else ``../shared`` beside the repository. Every ratio compares two measurements of this run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from pathlib import Path

import click
import numpy as np

from benchmarks import report
from benchmarks import workloads as w

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SECTIONS = ("stage-one", "process", "time-saved", "precision", "memory")
#: name -> (runtime, precision) of each way to run the backbone; "fp32" is the exact default
OPTIONS = {"fp32": ("tensorflow", "float32"), "ov-fp32": ("openvino", "float32"), "bf16": ("openvino", "bfloat16")}
log = logging.getLogger("benchmarks")


class Bench:
    """The measurements of one run; shared inputs (decoded pixels, warm models, caches) are made once."""

    def __init__(self, data: Path, weights: str, work: Path, options: dict):
        self.data, self.weights, self.work, self.o = data, weights, work, options
        self.results: dict = {"others_cpu_share": {}}

    def measure(self, label: str, func, *args):
        """``func(*args)``, recording the CPU share other processes took meanwhile under ``label``."""
        with w.OthersMeter() as meter:
            value = func(*args)
        shares = self.results["others_cpu_share"]
        shares[label if label not in shares else f"{label}#{len(shares)}"] = meter.share
        return value

    @functools.cached_property
    def pixels(self) -> np.ndarray:
        """A sample of real train images, decoded once as featcache decodes them."""
        files = w.image_files(self.data, ("train",))
        return w.decoded_sample(files, self.o["bare_images"], self.o["image_size"])

    @functools.cache  # noqa: B019 - one Bench per run
    def backbone(self, option: str):
        """(backbone, warm embed) of ``option`` (an OPTIONS key); OpenVINO's first build converts the model."""
        from featcache.backbone import backbone_for

        runtime, precision = OPTIONS[option]
        backbone = backbone_for(self.weights, self.o["image_size"], precision, runtime)
        if runtime == "openvino":
            backbone.cache_dir = self.work / "home" / "openvino"  # a fresh conversion, timed; whole processes reuse it
        start = time.perf_counter()
        embed = backbone.build()
        self.results.setdefault("build_seconds", {})[option] = round(time.perf_counter() - start, 2)
        embed(self.pixels[: self.o["batch_size"]])
        return backbone, embed

    def bare(self, option: str) -> w.Timed:
        _, embed = self.backbone(option)
        return self.measure(f"bare {option}", w.bare_forward, embed, self.pixels, self.o["batch_size"])

    def extract(self, option: str, data: Path, out: Path) -> w.Timed:
        """featcache extract of ``data`` into a new cache ``out``, in this process, with the warm ``option``."""
        out.unlink(missing_ok=True)
        backbone, embed = self.backbone(option)
        runtime, precision = OPTIONS[option]
        prebuilt = w.Prebuilt(backbone, embed)
        args = (data, out, prebuilt, self.weights, precision, runtime, self.o["batch_size"])
        timed, _ = self.measure(f"extract {option}", w.featcache_extract, *args)
        self.results.setdefault("time_in_forward", {}).setdefault(option, []).append(
            round(prebuilt.embed_seconds / timed.seconds, 4)
        )
        return timed

    @functools.cached_property
    def subsets(self) -> list[Path]:
        """The dataset split into ``rounds`` interleaved folders of class folders, one per round."""
        return w.interleaved_subsets(self.data, self.work / "subsets", self.o["rounds"])

    @functools.cache  # noqa: B019
    def head(self, cache: Path):
        """The head train-head makes of ``cache`` (default options, head epochs)."""
        from featcache.api import train_head

        return train_head(cache, cache.with_suffix(".head"), epochs=self.o["head_epochs"])

    def cli(self, *args: str) -> w.Process:
        """A whole featcache process; OpenVINO conversions go to a fresh FEATCACHE_HOME in the work folder."""
        env = {**os.environ, "FEATCACHE_HOME": str(self.work / "home")}
        done = self.measure(f"featcache {args[0]}", w.run_process, w.featcache_command(*args), self.work, env)
        if done.returncode != 0:
            raise click.ClickException(f"featcache {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}")
        return done


def rounds(b: Bench, workloads: dict, count: int) -> dict[str, list]:
    """Rates (images/s) of each workload in each round; workloads take the round's index.

    A round runs every workload once, on that round's subset, in an order rotated from round to
    round; ratios are taken within a round. ``"disturbed"`` lists, per round, the largest CPU share
    other processes took during one of its runs: such rounds are left out of the medians.
    """
    names = list(workloads)
    rates: dict[str, list] = {name: [] for name in names} | {"disturbed": []}
    for i in range(count):
        worst = 0.0
        for name in names[i % len(names) :] + names[: i % len(names)]:
            with w.OthersMeter() as meter:
                rates[name].append(round(workloads[name](i).rate, 2))
            worst = max(worst, meter.share or 0.0)
        rates["disturbed"].append(worst)
    return rates


def median_ratio(rates: dict, top: str, bottom: str) -> float:
    """Median over the undisturbed rounds (all rounds when fewer than two are) of top / bottom."""
    ratios = np.asarray(rates[top]) / np.asarray(rates[bottom])
    calm = [r for r, share in zip(ratios, rates["disturbed"]) if share <= w.DISTURBED]
    return round(float(np.median(calm if len(calm) >= 2 else ratios)), 4)


def calm_rounds(rates: dict) -> str:
    calm = sum(share <= w.DISTURBED for share in rates["disturbed"])
    return f"{calm if calm >= 2 else len(rates['disturbed'])} of {len(rates['disturbed'])}"


def stage_one(b: Bench) -> dict:
    """fp32 pipeline efficiency: featcache extract vs bare forward passes vs the Keras pipeline, in rounds."""
    model = b.backbone("fp32")[0].build_model()
    size, batch = b.o["image_size"], b.o["batch_size"]
    w.keras_predict_pipeline(model, w.warm_up_folder(b.subsets[0], b.work / "warm-up"), size, batch)  # traces predict
    rates = rounds(
        b,
        {
            "bare": lambda i: b.bare("fp32"),
            "featcache": lambda i: b.extract("fp32", b.subsets[i], b.work / f"round-{i}-fp32.h5"),
            "keras": lambda i: b.measure("keras pipeline", w.keras_predict_pipeline, model, b.subsets[i], size, batch),
        },
        b.o["rounds"],
    )
    return {
        "rounds": b.o["rounds"],
        "images_per_round": [len(w.image_files(s, (".",))) for s in b.subsets],
        "bare_fp32_rate": rates["bare"],
        "featcache_fp32_rate": rates["featcache"],
        "keras_pipeline_fp32_rate": rates["keras"],
        "rounds_disturbed_share": rates["disturbed"],
        "rounds_in_medians": calm_rounds(rates),
        "featcache_vs_bare_all_rounds": round(
            float(np.median(np.asarray(rates["featcache"]) / np.asarray(rates["bare"]))), 4
        ),
        "featcache_vs_bare": median_ratio(rates, "featcache", "bare"),
        "featcache_vs_keras_pipeline": median_ratio(rates, "featcache", "keras"),
        "keras_pipeline_vs_bare": median_ratio(rates, "keras", "bare"),
        "featcache_fp32_time_in_forward": b.results["time_in_forward"]["fp32"],
    }


def process(b: Bench) -> dict:
    """Whole ``featcache extract`` processes: a full extract, then a rerun on the unchanged data."""
    out = b.work / "cli.h5"
    args = ("extract", str(b.data), "-o", str(out), "--weights", b.weights, "-q")
    full = b.cli(*args)
    again = b.cli(*args)
    return {
        "full_extract_seconds": round(full.seconds, 2),
        "full_extract_max_rss_mb": round(full.max_rss_mb, 1),
        "full_extract_summary": full.stdout.strip().splitlines()[-1],
        "reextract_seconds": round(again.seconds, 3),
        "reextract_summary": again.stdout.strip().splitlines()[-1],
        "reextract_vs_full": round(again.seconds / full.seconds, 4),
    }


def time_saved(b: Bench) -> dict:
    """The recipe trained end to end vs featcache extract once + train-head, timed and scored."""
    if "process" not in b.results:
        b.results["process"] = process(b)
    extract_seconds = b.results["process"]["full_extract_seconds"]
    head_cli = b.cli(
        "train-head", str(b.work / "cli.h5"), "--out", str(b.work / "head-cli"), "--epochs", str(b.o["head_epochs"])
    )
    head_meta = json.loads((b.work / "head-cli" / "head.json").read_text())
    args = (b.backbone("fp32")[0], b.data, b.o["image_size"], b.o["recipe_epochs"])
    recipe = b.measure("recipe", w.reference_recipe, *args)
    epoch = min(recipe["epoch_seconds"])  # steady state: the first epoch also traces the graph
    head_fit = head_meta["metrics"]["fit_seconds"]
    n = b.o["head_epochs"]
    history = _history(b.work / "head-cli" / "history.csv")
    k = min(len(recipe["val_accuracy"]), len(history))
    return {
        "recipe_epoch_seconds": [round(s, 2) for s in recipe["epoch_seconds"]],
        "recipe_val_accuracy": [round(a, 4) for a in recipe["val_accuracy"]],
        "recipe_10_epochs_seconds": round(10 * epoch, 1),
        "recipe_epochs": len(recipe["epoch_seconds"]),
        "head_fit_seconds": head_fit,
        "head_epoch_seconds": round(head_fit / n, 4),
        "head_process_seconds": round(head_cli.seconds, 2),
        "extract_process_seconds": extract_seconds,
        "head_val_accuracy_best": round(head_meta["metrics"]["val_accuracy"], 4),
        "head_best_epoch": head_meta["best_epoch"],
        "head_val_accuracy_by_epoch": [round(a, 4) for a in history],
        "speedup_head_epochs": round(10 * epoch / (10 * head_fit / n), 1),
        "speedup_extract_plus_head": round(10 * epoch / (extract_seconds + head_cli.seconds), 2),
        "accuracy_gap_same_epochs": round(max(history[:k]) - max(recipe["val_accuracy"][:k]), 4),
        "accuracy_gap_best": round(head_meta["metrics"]["val_accuracy"] - max(recipe["val_accuracy"]), 4),
    }


def _history(path: Path) -> list[float]:
    import csv

    with open(path, newline="") as fh:
        return [float(row["val_accuracy"]) for row in csv.DictReader(fh)]


def precision(b: Bench) -> dict:
    """OpenVINO float32 and bfloat16 against TensorFlow float32: speed in rounds, then whole processes
    on the full dataset for the closeness of the vectors and the heads' accuracy."""
    try:
        import openvino as ov
    except ImportError:
        return {"skipped": "openvino is not installed (pip install 'featcache[openvino]')"}
    out = {
        "cpu_native_bf16": "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
        "openvino_version": ov.get_version(),
    }
    workloads = {}
    for option in OPTIONS:
        workloads[f"bare {option}"] = functools.partial(lambda option, i: b.bare(option), option)
        workloads[option] = functools.partial(
            lambda option, i: b.extract(option, b.subsets[i], b.work / f"precision-round-{i}-{option}.h5"), option
        )
    rates = rounds(b, workloads, min(b.o["precision_rounds"], b.o["rounds"]))
    out["rates"] = rates
    out["rounds_in_medians"] = calm_rounds(rates)
    fp32 = _full_extract(b, "fp32", ())
    keras_rate = b.results.get("stage-one", {}).get("keras_pipeline_fp32_rate")
    for option, flags in (("ov-fp32", ("--runtime", "openvino")), ("bf16", ("--precision", "bfloat16"))):
        full = _full_extract(b, option, flags)
        out.update(_compare(b, option, rates, full, fp32, keras_rate))
    return out


def _full_extract(b: Bench, option: str, flags: tuple) -> dict:
    """A whole extract process of the full dataset with ``flags`` (fp32 reuses the process section's)."""
    out = b.work / ("cli.h5" if option == "fp32" else f"full-{option}.h5")
    if option == "fp32" and out.is_file():
        return {"cache": out, "seconds": b.results["process"]["full_extract_seconds"]}
    done = b.cli("extract", str(b.data), "-o", str(out), "--weights", b.weights, "-q", *flags)
    return {"cache": out, "seconds": done.seconds, "summary": done.stdout.strip().splitlines()[-1]}


def _compare(b: Bench, option: str, rates: dict, full: dict, fp32: dict, keras_rate) -> dict:
    from featcache import store

    ref, got = store.read_cache(fp32["cache"]), store.read_cache(full["cache"])
    index = {sha: i for i, sha in enumerate(ref.rows.sha256)}
    expected = ref.features[[index[s] for s in got.rows.sha256]]
    cos = w.cosines(got.features, expected)
    acc32 = b.head(fp32["cache"]).metrics["val_accuracy"]
    acc = b.head(full["cache"]).metrics["val_accuracy"]
    p = option.replace("-", "_") + "_"
    return {
        p + "bare_speedup": median_ratio(rates, f"bare {option}", "bare fp32"),
        p + "extract_speedup": median_ratio(rates, option, "fp32"),
        # rounds of two sections: a ratio of medians, not a median of ratios
        p + "extract_vs_keras_pipeline": round(float(np.median(rates[option]) / np.median(keras_rate)), 4)
        if keras_rate
        else None,
        p + "process_seconds": round(full["seconds"], 1),
        p + "process_speedup": round(fp32["seconds"] / full["seconds"], 3),
        p + "process_summary": full.get("summary"),
        p + "max_abs_diff": float(np.abs(got.features - expected).max()),
        p + "cosine_mean": float(np.round(cos.mean(), 6)),
        p + "cosine_p1": float(np.round(np.percentile(cos, 1), 6)),
        p + "cosine_min": float(np.round(cos.min(), 6)),
        p + "head_val_accuracy": round(acc, 4),
        p + "accuracy_gap": round(acc - acc32, 4),
        "fp32_head_val_accuracy": round(acc32, 4),
    }


def memory(b: Bench) -> dict:
    """Peak RSS of whole extract processes on N and 5N synthetic images."""
    n = b.o["rss_images"]
    runs = {}
    for count in (n, 5 * n):
        data = w.synthetic_images(b.work / f"synthetic-{count}", count)
        out = b.work / f"synthetic-{count}.h5"
        runs[count] = b.cli("extract", str(data), "-o", str(out), "--weights", b.weights, "-q", "--overwrite")
    small, large = runs[n], runs[5 * n]
    return {
        "n": n,
        "max_rss_mb_n": round(small.max_rss_mb, 1),
        "max_rss_mb_5n": round(large.max_rss_mb, 1),
        "growth": round(large.max_rss_mb / small.max_rss_mb - 1, 4),
        "seconds_n": round(small.seconds, 1),
        "seconds_5n": round(large.seconds, 1),
    }


RUNNERS = {
    "stage-one": stage_one,
    "process": process,
    "time-saved": time_saved,
    "precision": precision,
    "memory": memory,
}


def _default_data() -> Path:
    return Path(os.environ.get("FEATCACHE_DATA") or SHARED / "data" / "clothing-dataset-small")


def _default_weights() -> str:
    local = SHARED / "weights" / "xception_imagenet_notop.weights.h5"
    return os.environ.get("FEATCACHE_WEIGHTS") or (str(local) if local.is_file() else "imagenet")


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=_default_data, help="train/validation/test folders.")
@click.option("--weights", default=_default_weights, help="Xception no-top weights file, or imagenet.")
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "bench-results", help="Where results go.")
@click.option("--sections", default=",".join(SECTIONS), show_default=True, help="Comma-separated sections to run.")
@click.option("--recipe-epochs", type=int, default=2, show_default=True, help="Epochs of the timed recipe.")
@click.option("--head-epochs", type=int, default=10, show_default=True, help="Epochs of train-head.")
@click.option("--bare-images", type=int, default=512, show_default=True, help="Images of each bare forward run.")
@click.option("--rss-images", type=int, default=400, show_default=True, help="N of the peak-RSS check (N and 5N).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Batch of every forward pass.")
@click.option("--rounds", type=int, default=6, show_default=True, help="Rounds of the fp32 side-by-side runs.")
@click.option("--precision-rounds", type=int, default=3, show_default=True, help="Rounds of the precision runs.")
def main(data, weights, out, sections, **options):
    """Benchmark featcache against the reference recipe and the bare model on this machine."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise click.BadParameter(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    if not (data / "train").is_dir():
        raise click.BadParameter(f"{data} has no train/ folder; pass --data or set FEATCACHE_DATA", param_hint="--data")
    work = Path(out) / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bench = Bench(data, weights, work, {**options, "image_size": 150})
    bench.results["environment"] = report.environment(data, weights)
    for name in chosen:
        log.info("section %s (load average %.2f)", name, os.getloadavg()[0])
        start = time.perf_counter()
        bench.results[name] = RUNNERS[name](bench)
        bench.results[name]["section_seconds"] = round(time.perf_counter() - start, 1)
        log.info("section %s done in %.0f s", name, bench.results[name]["section_seconds"])
    bench.results["environment"]["load_average_end"] = os.getloadavg()
    click.echo(report.write(Path(out), bench.results))


if __name__ == "__main__":
    main()
