"""Run the benchmark suite: featcache against the lesson's recipe, plain Keras and a plain script, in one run.

    python -m benchmarks.bench            # or: make bench
    python -m benchmarks.bench --sections stage-one,process --rounds 3

Prints a table, and writes ``bench.json``, ``bench.md`` and ``bench.png`` into ``--out``
(``bench-results/``). Data and weights default to ``$FEATCACHE_DATA`` / ``$FEATCACHE_WEIGHTS``,
else ``../shared`` beside the repository. Every ratio compares two measurements of this run;
side-by-side ratios are taken within rounds over the same images and given as median, min and max.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import statistics
import time
from pathlib import Path

import click
import numpy as np

from benchmarks import report, scale
from benchmarks import workloads as w

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
#: in the order they run: the long recipe section early, so that a run cut short still has it
SECTIONS = ("startup", "memory", "time-saved", "stage-one", "process", "precision", "scale")
#: sections that make their own inputs and need neither the dataset nor the weights
SELF_CONTAINED = ("memory", "scale")
#: name -> (runtime, precision) of each way to run the backbone; "fp32" is the exact default
OPTIONS = {"fp32": ("tensorflow", "float32"), "ov-fp32": ("openvino", "float32"), "bf16": ("openvino", "bfloat16")}
#: the recipe's length that every "10 epochs" figure refers to
RECIPE_EPOCHS = 10
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
    def subsets(self) -> list[Path]:
        """The dataset split into ``rounds`` interleaved folders of class folders, one per round."""
        return w.interleaved_subsets(self.data, self.work / "subsets", self.o["rounds"])

    @functools.cache  # noqa: B019 - one Bench per run
    def round_pixels(self, i: int) -> np.ndarray:
        """uint8 pixels of every image of round ``i``'s subset, decoded once by Keras' ``load_img``."""
        return w.decode_plain(w.image_files(self.subsets[i], (".",)))

    @functools.cached_property
    def plain_model(self):
        """Xception + GAP built by plain Keras code (no featcache), its ``predict`` traced on full and short batches."""
        model = w.plain_model(self.weights)
        warm = w.first_images_folder(self.subsets[0], self.work / "warm-up", 2 * self.o["batch_size"] + 5)
        w.keras_predict(model, w.keras_dataset(warm, self.o["image_size"], self.o["batch_size"]))
        return model

    @functools.cache  # noqa: B019
    def backbone(self, option: str):
        """(featcache backbone, warm embed) of ``option`` (an OPTIONS key); OpenVINO reuses start-up's conversion."""
        from featcache.backbones import backbone_for

        runtime, precision = OPTIONS[option]
        backbone = backbone_for(self.weights, self.o["image_size"], precision, runtime)
        if runtime == "openvino":
            backbone.cache_dir = self.work / "home" / "openvino"
        embed = backbone.build()
        embed(np.zeros((self.o["batch_size"], self.o["image_size"], self.o["image_size"], 3), np.uint8))
        return backbone, embed

    def bare(self, option: str, pixels: np.ndarray) -> w.Timed:
        """featcache's own embed function of ``option`` over pre-decoded pixels."""
        return self.measure(f"bare {option}", w.bare_forward, self.backbone(option)[1], pixels, self.o["batch_size"])

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

    @functools.cache  # noqa: B019
    def head(self, cache: Path):
        """The head train-head makes of ``cache`` (default options, head epochs)."""
        from featcache.api import train_head

        return train_head(cache, cache.with_suffix(".head"), epochs=self.o["head_epochs"])

    def process(self, label: str, command: list[str]) -> w.Process:
        """A whole process; OpenVINO conversions go to a FEATCACHE_HOME in the work folder."""
        env = {**os.environ, "FEATCACHE_HOME": str(self.work / "home")}
        done = self.measure(label, w.run_process, command, self.work, env)
        if done.returncode != 0:
            raise click.ClickException(f"{label} failed: {done.stderr.strip()[-800:]}")
        return done

    def cli(self, *args: str) -> w.Process:
        return self.process(f"featcache {args[0]}", w.featcache_command(*args))

    @functools.cached_property
    def full_extract(self) -> dict:
        """Whole ``featcache extract`` processes on the full dataset: a first run, then a rerun on unchanged data."""
        out = self.work / "cli.h5"
        args = ("extract", str(self.data), "-o", str(out), "--weights", self.weights, "-q")
        full, again = self.cli(*args), self.cli(*args)
        return {
            "full_extract_seconds": round(full.seconds, 2),
            "full_extract_max_rss_mb": round(full.max_rss_mb, 1),
            "full_extract_summary": full.stdout.strip().splitlines()[-1],
            "reextract_seconds": round(again.seconds, 3),
            "reextract_summary": again.stdout.strip().splitlines()[-1],
            "reextract_vs_full": round(again.seconds / full.seconds, 4),
        }


def rounds(workloads: dict, count: int) -> dict[str, list]:
    """Rates (images/s) of each workload in each round; workloads take the round's index.

    A round runs every workload once, on that round's images, in an order rotated from round to
    round; ratios are taken within a round. ``"others_share"`` lists, per round, the largest CPU
    share other processes took during one of its runs.
    """
    names = list(workloads)
    rates: dict[str, list] = {name: [] for name in names} | {"others_share": []}
    for i in range(count):
        worst = 0.0
        for name in names[i % len(names) :] + names[: i % len(names)]:
            with w.OthersMeter() as meter:
                rates[name].append(round(workloads[name](i).rate, 2))
            worst = max(worst, meter.share or 0.0)
        rates["others_share"].append(worst)
        log.info("round %d: %s", i, {name: rates[name][-1] for name in names})
    return rates


def spread(values) -> dict:
    """Median, min and max of ``values`` (one per round) and how many rounds."""
    values = [float(v) for v in values]
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "rounds": len(values),
    }


def ratio(rates: dict, top: str, bottom: str) -> dict:
    """Spread over the rounds of top / bottom, each round's ratio taken within the round."""
    return spread(np.asarray(rates[top]) / np.asarray(rates[bottom]))


def startup(b: Bench) -> dict:
    """Start-up seconds in a fresh process: TensorFlow import, weights hash, model build, first batch, OpenVINO."""
    import importlib.util

    args = ["--weights", b.weights]
    if importlib.util.find_spec("openvino") is not None:
        args += ["--openvino-cache", str(b.work / "home" / "openvino")]
    done = b.process("startup", w.module_command("startup", *args))
    result = json.loads(done.stdout.strip().splitlines()[-1])
    help_run = b.cli("--help")  # the command line answers without importing TensorFlow
    return {**result, "featcache_help_process": round(help_run.seconds, 3)}


def stage_one(b: Bench) -> dict:
    """In process, over the same images per round: featcache extract vs bare forward passes vs Keras' pipeline."""
    model, size, batch = b.plain_model, b.o["image_size"], b.o["batch_size"]
    predict = w.plain_predict(model)

    def keras(i: int) -> w.Timed:
        dataset = w.keras_dataset(b.subsets[i], size, batch)  # lists the files, outside the timer
        return b.measure("keras pipeline", w.keras_predict, model, dataset)

    rates = rounds(
        {
            "bare": lambda i: b.measure("bare plain fp32", w.bare_forward, predict, b.round_pixels(i), batch),
            "featcache": lambda i: b.extract("fp32", b.subsets[i], b.work / f"round-{i}-fp32.h5"),
            "keras": keras,
        },
        b.o["rounds"],
    )
    return {
        "images_per_round": [len(w.image_files(s, (".",))) for s in b.subsets],
        "bare_fp32_rate": rates["bare"],
        "featcache_fp32_rate": rates["featcache"],
        "keras_pipeline_fp32_rate": rates["keras"],
        "rounds_others_share": rates["others_share"],
        "featcache_vs_bare": ratio(rates, "featcache", "bare"),
        "featcache_vs_keras_pipeline": ratio(rates, "featcache", "keras"),
        "keras_pipeline_vs_bare": ratio(rates, "keras", "bare"),
        "featcache_fp32_time_in_forward": b.results["time_in_forward"]["fp32"],
    }


def process(b: Bench) -> dict:
    """Whole processes, start-up in: featcache extract vs the bare script per round; full extract and rerun."""

    def featcache(i: int) -> w.Timed:
        out = b.work / f"process-round-{i}.h5"
        done = b.cli("extract", str(b.subsets[i]), "-o", str(out), "--weights", b.weights, "-q", "--overwrite")
        return w.Timed(done.seconds, len(w.image_files(b.subsets[i], (".",))))

    def bare_script(i: int) -> w.Timed:
        out = str(b.work / f"bare-script-{i}.npy")
        done = b.process("bare script", w.module_command("bare_script", str(b.subsets[i]), out, "--weights", b.weights))
        return w.Timed(done.seconds, int(done.stdout.split()[0]))

    rates = rounds({"featcache": featcache, "bare script": bare_script}, b.o["rounds"])
    return {
        **b.full_extract,
        "featcache_process_rate": rates["featcache"],
        "bare_script_process_rate": rates["bare script"],
        "process_rounds_others_share": rates["others_share"],
        "featcache_vs_bare_script": ratio(rates, "featcache", "bare script"),
    }


def recipe(b: Bench, variant: str, epochs: int) -> dict:
    """The recipe ``variant`` (lesson, tf-data) trained in its own process; its 10-epoch figures, measured or not."""
    out = b.work / f"recipe-{variant}.json"
    command = w.module_command("recipes", variant, str(b.data), "--weights", b.weights, "--epochs", str(epochs))
    done = b.process(f"recipe {variant}", [*command, "--out", str(out)])
    result = json.loads(out.read_text())
    seconds = result["epoch_seconds"]
    missing = RECIPE_EPOCHS - len(seconds)
    steady = statistics.median(seconds[1:] or seconds)  # the first epoch also traces the model
    return {
        **result,
        "ten_label": f"{RECIPE_EPOCHS} epochs" if not missing else f"{RECIPE_EPOCHS} epochs extrapolated from {epochs}",
        "ten_fit_seconds": round(result["fit_seconds"] + missing * steady, 1),
        "ten_process_seconds": round(done.seconds + missing * steady, 1),
        "process_seconds": round(done.seconds, 1),
    }


def time_saved(b: Bench) -> dict:
    """The lesson's recipe (and its tf.data variant) trained end to end vs featcache extract once + train-head."""
    extract_seconds = b.full_extract["full_extract_seconds"]  # makes the cache train-head reads
    head_dir = b.work / "head-cli"
    head_cli = b.cli("train-head", str(b.work / "cli.h5"), "--out", str(head_dir), "--epochs", str(b.o["head_epochs"]))
    fit = json.loads((head_dir / "head.json").read_text())["metrics"]["fit_seconds"]
    head = {
        "head_fit_seconds": fit,
        "head_epoch_seconds": round(fit / b.o["head_epochs"], 4),
        "head_process_seconds": round(head_cli.seconds, 2),
        "extract_process_seconds": extract_seconds,
        "head_val_accuracy_by_epoch": [round(a, 4) for a in _history(head_dir / "history.csv")],
    }
    out = dict(head)
    for variant, epochs in (("lesson", b.o["recipe_epochs"]), ("tf-data", b.o["tf_data_epochs"])):
        run = recipe(b, variant, epochs)
        p = variant.replace("-", "_") + "_"
        out |= {p + key: value for key, value in (run | _against_head(run, head, b.o["head_epochs"])).items()}
    return out


def _against_head(run: dict, head: dict, head_epochs: int) -> dict:
    """A recipe's run against featcache's: 10 epochs each, fit against fit, whole processes against whole processes,
    and the best validation accuracy over the same number of epochs."""
    head_ten_fit = head["head_fit_seconds"] * RECIPE_EPOCHS / head_epochs
    featcache_processes = head["extract_process_seconds"] + head["head_process_seconds"]
    history = head["head_val_accuracy_by_epoch"]
    k = min(len(run["val_accuracy"]), len(history))
    return {
        "speedup_head_epochs": round(run["ten_fit_seconds"] / head_ten_fit, 1),
        "speedup_extract_plus_head": round(run["ten_process_seconds"] / featcache_processes, 2),
        "accuracy_epochs": k,
        "accuracy_gap_same_epochs": round(max(history[:k]) - max(run["val_accuracy"][:k]), 4),
    }


def _history(path: Path) -> list[float]:
    import csv

    with open(path, newline="") as fh:
        return [float(row["val_accuracy"]) for row in csv.DictReader(fh)]


def memory(b: Bench) -> dict:
    """Peak RSS of whole extract processes with a fake backbone (no TensorFlow) on N and 10N tiny images."""
    n = b.o["rss_images"]
    peaks = {}
    for count in (n, 10 * n):
        data = w.synthetic_images(b.work / f"synthetic-{count}", count, size=(48, 36))
        command = w.module_command("fake_extract", str(data), str(b.work / f"synthetic-{count}.h5"))
        done = b.process("fake extract", command)
        rows = json.loads(done.stdout.strip().splitlines()[-1])["rows"]
        peaks[count] = {"max_rss_mb": round(done.max_rss_mb, 1), "seconds": round(done.seconds, 1), "rows": rows}
    growth = (peaks[10 * n]["max_rss_mb"] - peaks[n]["max_rss_mb"]) / (9 * n) * 1000
    return {
        "n": n,
        "rows_n_10n": [peaks[n]["rows"], peaks[10 * n]["rows"]],
        "max_rss_mb_n": peaks[n]["max_rss_mb"],
        "max_rss_mb_10n": peaks[10 * n]["max_rss_mb"],
        "growth_mb_per_1000": round(growth, 2),
        "vectors_mb_per_1000": round(1000 * 2048 * 4 / 2**20, 2),
        "seconds_n": peaks[n]["seconds"],
        "seconds_10n": peaks[10 * n]["seconds"],
    }


def precision(b: Bench) -> dict:
    """OpenVINO float32 and bfloat16 against TensorFlow float32: speed in rounds (in process, same images),
    then whole processes on the full dataset for the closeness of the vectors and the heads' accuracy."""
    try:
        import openvino as ov
    except ImportError:
        return {"skipped": "openvino is not installed (pip install 'featcache[openvino]')"}
    count, k = min(b.o["precision_rounds"], b.o["rounds"]), b.o["precision_images"]
    folders = [w.first_images_folder(b.subsets[i], b.work / f"precision-{i}", k) for i in range(count)]
    workloads = {}
    for option in OPTIONS:
        workloads[f"bare {option}"] = functools.partial(lambda o, i: b.bare(o, b.round_pixels(i)[:k]), option)
        workloads[option] = functools.partial(
            lambda o, i: b.extract(o, folders[i], b.work / f"precision-round-{i}-{o}.h5"), option
        )
    rates = rounds(workloads, count)
    out = {
        "cpu_native_bf16": "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
        "openvino_version": ov.get_version(),
        "images_per_round": [len(w.image_files(f, (".",))) for f in folders],
        "rates": rates,
    }
    fp32 = {"cache": b.work / "cli.h5", "seconds": b.full_extract["full_extract_seconds"]}
    for option, flags in (("ov-fp32", ("--runtime", "openvino")), ("bf16", ("--precision", "bfloat16"))):
        cache = b.work / f"full-{option}.h5"
        done = b.cli("extract", str(b.data), "-o", str(cache), "--weights", b.weights, "-q", *flags)
        full = {"cache": cache, "seconds": done.seconds, "summary": done.stdout.strip().splitlines()[-1]}
        out.update(_compare(b, option, rates, full, fp32))
    return out


def _compare(b: Bench, option: str, rates: dict, full: dict, fp32: dict) -> dict:
    from featcache.cache.layout import read_cache

    ref, got = read_cache(fp32["cache"]), read_cache(full["cache"])
    index = {sha: i for i, sha in enumerate(ref.rows.sha256)}
    expected = ref.features[[index[s] for s in got.rows.sha256]]
    cos = w.cosines(got.features, expected)
    acc32 = b.head(fp32["cache"]).metrics["val_accuracy"]
    acc = b.head(full["cache"]).metrics["val_accuracy"]
    p = option.replace("-", "_") + "_"
    return {
        p + "bare_speedup": ratio(rates, f"bare {option}", "bare fp32"),
        p + "extract_speedup": ratio(rates, option, "fp32"),
        p + "process_seconds": round(full["seconds"], 1),
        p + "process_speedup": round(fp32["seconds"] / full["seconds"], 3),
        p + "process_summary": full["summary"],
        p + "max_abs_diff": float(np.abs(got.features - expected).max()),
        p + "cosine_mean": float(np.round(cos.mean(), 6)),
        p + "cosine_p1": float(np.round(np.percentile(cos, 1), 6)),
        p + "cosine_min": float(np.round(cos.min(), 6)),
        p + "head_val_accuracy": round(acc, 4),
        p + "accuracy_gap": round(acc - acc32, 4),
        "fp32_head_val_accuracy": round(acc32, 4),
    }


def scale_section(b: Bench) -> dict:
    """benchmarks/scale.py: an add to a large cache, train-head under a memory budget, peak RSS as rows grow."""
    return scale.run(b.work / "scale", rows=b.o["scale_rows"], big_rows=b.o["scale_big_rows"])


RUNNERS = {
    "startup": startup,
    "memory": memory,
    "stage-one": stage_one,
    "process": process,
    "time-saved": time_saved,
    "precision": precision,
    "scale": scale_section,
}


def _default_data() -> Path:
    return Path(os.environ.get("FEATCACHE_DATA") or SHARED / "data" / "clothing-dataset-small")


def _default_weights() -> str:
    local = SHARED / "weights" / "xception_imagenet_notop.weights.h5"
    return os.environ.get("FEATCACHE_WEIGHTS") or (str(local) if local.is_file() else "imagenet")


def _sections(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        choices = ", ".join(SECTIONS)
        raise click.BadParameter(f"unknown sections {unknown}; choose from {choices}", param_hint="--sections")
    return chosen


EPOCHS = click.IntRange(1, RECIPE_EPOCHS)


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=_default_data, help="train/validation/test folders.")
@click.option("--weights", default=_default_weights, help="Xception no-top weights file, or imagenet.")
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "bench-results", help="Where results go.")
@click.option("--sections", default=",".join(SECTIONS), show_default=True, help="Comma-separated sections to run.")
@click.option("--recipe-epochs", type=EPOCHS, default=10, show_default=True, help="Epochs of the lesson's recipe.")
@click.option("--tf-data-epochs", type=EPOCHS, default=1, show_default=True, help="Epochs of the tf.data variant.")
@click.option("--head-epochs", type=int, default=10, show_default=True, help="Epochs of train-head.")
@click.option("--rss-images", type=int, default=1000, show_default=True, help="N of the peak-RSS check (N and 10N).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Batch of every forward pass.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Rounds (and subsets of the data) side by side.")
@click.option("--precision-rounds", type=int, default=3, show_default=True, help="Rounds of the precision runs.")
@click.option("--precision-images", type=int, default=320, show_default=True, help="Images per precision round.")
@click.option("--scale-rows", type=int, default=200_000, show_default=True, help="scale: rows of the cache added to.")
@click.option(
    "--scale-big-rows", type=int, default=1_000_000, show_default=True, help="scale: rows of train-head's cache."
)
def main(data, weights, out, sections, **options):
    """Benchmark featcache against the lesson's recipe, plain Keras and a plain script on this machine."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    chosen = _sections(sections)
    if not set(chosen) <= set(SELF_CONTAINED) and not (data / "train").is_dir():
        raise click.BadParameter(f"{data} has no train/ folder; pass --data or set FEATCACHE_DATA", param_hint="--data")
    work = Path(out) / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bench = Bench(data, weights, work, {**options, "image_size": 150})
    bench.results["environment"] = report.environment(data, weights)
    bench.results["options"] = options
    text = ""
    try:
        for name in chosen:
            log.info("section %s (load average %.2f)", name, os.getloadavg()[0])
            start = time.perf_counter()
            bench.results[name] = RUNNERS[name](bench)
            bench.results[name]["section_seconds"] = round(time.perf_counter() - start, 1)
            log.info("section %s done in %.0f s", name, bench.results[name]["section_seconds"])
            bench.results["environment"]["load_average_end"] = os.getloadavg()
            text = report.write(Path(out), bench.results)  # after each section: a run cut short keeps its figures
    finally:
        shutil.rmtree(work, ignore_errors=True)  # subsets, caches and heads made for the run; the results stay
    click.echo(text)


if __name__ == "__main__":
    main()
