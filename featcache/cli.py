"""The command line: parses options, calls one function of :mod:`featcache.api`, prints the result's summary.

Every default shown here is read from the command's configuration in :mod:`featcache.config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import sys
from pathlib import Path

import click

from featcache import tf_logs
from featcache.config import (
    BACKBONES,
    DEFAULT_CACHE,
    DEFAULT_COMPARE_DIR,
    DEFAULT_HEAD_DIR,
    DEFAULT_LABELS_DIR,
    DEFAULT_LEAKS_DIR,
    DEFAULT_SWEEP_DIR,
    ENGINES,
    EXPORT_FORMATS,
    MEMORY_BUDGET_FRACTION,
    PRECISIONS,
    QUANTIZATIONS,
    RAY_ADDRESS_ENV,
    REGISTRY,
    RUNTIMES,
    WEIGHTS_ENV,
    ExportConfig,
    ExtractConfig,
    HeadConfig,
    LabelsConfig,
    LeaksConfig,
    PredictConfig,
    SweepConfig,
    VerifyConfig,
)
from featcache.errors import FeatcacheError
from featcache.images import INTERPOLATIONS
from featcache.locations import data_location
from featcache.names import shown


def _echo(text: str, **kwargs) -> None:
    """``click.echo`` of text that may hold names that are not UTF-8."""
    click.echo(shown(text), **kwargs)


def _errors_as_messages(func):
    """A library error becomes one line on stderr and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FeatcacheError as exc:
            raise click.ClickException(shown(str(exc))) from None
        except KeyboardInterrupt:
            _echo("interrupted; committed work is kept, rerun the same command to finish", err=True)
            sys.exit(130)

    return wrapper


def _option(config, name: str, help: str, **kwargs):
    """``--name`` for the field ``name`` of ``config``, with the default declared there."""
    default = config.__dataclass_fields__[name].default
    kwargs.setdefault("type", type(default) if default not in (None, dataclasses.MISSING) else None)
    kwargs.setdefault("show_default", True)
    return click.option("--" + name.replace("_", "-"), default=default, help=help, **kwargs)


def _given(options: dict) -> dict:
    """The options the user gave; those left out (None) take the configuration's default."""
    return {key: value for key, value in options.items() if value is not None}


class _Values(click.ParamType):
    """One value or a comma-separated list of them, e.g. 0.001,0.01."""

    name = "LIST"

    def __init__(self, kind):
        self.kind = kind

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.kind(v.strip()) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of {self.kind.__name__} values, e.g. 0,10,100", param)


def _joined(ctx, param, given: tuple[tuple, ...]) -> tuple | None:
    """The values of a list option, whether repeated, comma-separated or both; None when it was left out."""
    return tuple(value for values in given for value in values) or None


def _list_option(config, name: str, kind, help: str):
    """``--name`` for the field ``name`` of ``config`` that holds several values: the option may be repeated
    and each takes one value or a comma-separated list, in every command (``--lr 0.01 --lr 0.1`` is
    ``--lr 0.01,0.1``)."""
    default = ",".join(v if isinstance(v, str) else f"{v:g}" for v in config.__dataclass_fields__[name].default)
    return click.option(
        "--" + name.replace("_", "-"),
        type=_Values(kind),
        multiple=True,
        callback=_joined,
        default=(default,) if default else (),
        show_default=True,
        help=help + " Repeat the option or give a comma-separated list.",
    )


class _Command(click.Command):
    """A command that still takes the former spellings of its options (``renamed``: old -> new) until the
    next release: each one used is read as its new spelling, with a one-line notice on stderr."""

    def __init__(self, *args, renamed: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.renamed = renamed or {}

    def parse_args(self, ctx, args):
        current, noticed = [], set()
        for i, arg in enumerate(args):
            if arg == "--":  # what follows is arguments, never options
                current += args[i:]
                break
            name, equals, value = arg.partition("=")
            if name in self.renamed:
                if name not in noticed:
                    new = self.renamed[name]
                    _echo(f"{name} of {self.name} is now {new}; the old name goes in the next release", err=True)
                    noticed.add(name)
                arg = self.renamed[name] + equals + value
            current.append(arg)
        return super().parse_args(ctx, current)


_QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")


def _apply(options):
    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v", "--verbose", is_flag=True, help="Log diagnostics to stderr, TensorFlow's C++ and absl logs included."
)
@click.version_option(package_name="featcache")
def main(verbose: bool) -> None:
    """featcache: run a frozen backbone once, cache its vectors, train heads in seconds."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # TensorFlow's start-up notices (oneDNN, no CUDA driver) read like failures to a new user.
    tf_logs.configure(verbose)


_WEIGHTS_HELP = (
    f"Backbone weights: 'imagenet', a weights file or 'none'. Default: ${WEIGHTS_ENV} or the weights the cache "
    f"recorded, whichever matches it."
)
_EXTRACT_OPTIONS = [
    click.option(
        "-o",
        "--out",
        type=click.Path(path_type=Path),
        default=DEFAULT_CACHE,
        show_default=True,
        help="The HDF5 cache to write or update.",
    ),
    click.option(
        "--manifest",
        type=click.Path(path_type=Path),
        default=None,
        help="CSV with columns path,label[,split]; paths relative to DATA_DIR.",
    ),
    click.option(
        "--backbone",
        type=click.Choice(BACKBONES),
        default=ExtractConfig.backbone,
        show_default=True,
        help="The frozen keras.applications base (pooled by GlobalAveragePooling2D). Part of the cache fingerprint.",
    ),
    click.option(
        "--image-size",
        type=int,
        default=None,
        help="Square input size in pixels. Default: the backbone's (xception: the recipe's 150; "
        + ", ".join(f"{n}: {s.default_size}" for n, s in REGISTRY.items() if n != "xception")
        + ").",
    ),
    _option(
        ExtractConfig,
        "interpolation",
        "Pillow resize filter; nearest is what Keras' load_img and ImageDataGenerator use.",
        type=click.Choice(INTERPOLATIONS),
    ),
    click.option(
        "--exif-transpose/--no-exif-transpose",
        default=ExtractConfig.exif_transpose,
        show_default=True,
        help="Rotate images as their EXIF orientation says. --no-exif-transpose ignores it, as Keras' "
        "load_img does, for exactly its pixels. Part of the cache fingerprint.",
    ),
    _option(ExtractConfig, "batch_size", "Images per forward pass."),
    click.option(
        "--weights",
        default=None,
        help="'imagenet' (Keras cache or download), a weights file, or 'none' "
        f"(random, for tests). Default: ${WEIGHTS_ENV} or imagenet.",
    ),
    _option(ExtractConfig, "val_fraction", "Share of validation images when DATA_DIR has class folders only."),
    _option(ExtractConfig, "test_fraction", "Share of test images when DATA_DIR has class folders only."),
    _option(ExtractConfig, "workers", "Image decoding threads."),
    _option(
        ExtractConfig,
        "commit_seconds",
        "Seconds of computed vectors kept before they are committed as one shard (at most 4096 rows): what a "
        "kill can lose. Fewer, larger shards read faster; 0 commits every batch.",
        type=float,
    ),
    _option(
        ExtractConfig,
        "precision",
        "float32: exact. bfloat16: OpenVINO with a bf16 hint, about 2x faster on "
        "CPUs with native bf16 (AVX-512 BF16, AMX), slower on others. Part of the cache fingerprint.",
        type=click.Choice(PRECISIONS),
    ),
    click.option(
        "--runtime",
        type=click.Choice(RUNTIMES),
        default=None,
        help="Who runs the model. Default: tensorflow for float32, openvino for bfloat16 "
        "(pip install 'featcache[openvino]'). Part of the cache fingerprint.",
    ),
    _option(
        ExtractConfig,
        "engine",
        "local: this process. ray: actors on a Ray cluster (pip install 'featcache[ray]'); the cluster must see "
        "DATA_DIR, the cache's folder and the weights file at the same paths.",
        type=click.Choice(ENGINES),
    ),
    click.option(
        "--ray-address",
        default=None,
        help=f"Ray cluster to run on (--engine ray). Default: ${RAY_ADDRESS_ENV}, else a local Ray for this run.",
    ),
    click.option(
        "--ray-actors",
        type=int,
        default=None,
        help="Actors that embed (--engine ray). Default: the cluster's CPUs / --ray-cpus.",
    ),
    _option(ExtractConfig, "ray_cpus", "CPUs each Ray actor reserves.", type=float),
    _option(ExtractConfig, "ray_gpus", "GPUs each Ray actor reserves.", type=float),
    click.option(
        "--augment",
        type=int,
        default=None,
        help="Augmented views to keep per train image besides its clean vector (0: none). Default: as many "
        "as the cache has. Raising it computes only the new views.",
    ),
    click.option(
        "--augment-policy",
        default=None,
        help="Transforms of the views: lesson (shear 10, zoom 0.1, vertical flip), flip (horizontal flip), "
        "light (flip, rotation 10, zoom 0.05), or a JSON file of ImageDataGenerator parameters. "
        "Default: the cache's, else lesson.",
    ),
    click.option("--augment-seed", type=int, default=None, help="Seed of the views. Default: the cache's, else 0."),
    click.option("--strict", is_flag=True, help="Fail instead of quarantining files that cannot be used."),
    click.option("--overwrite", is_flag=True, help="Replace a cache made with other settings."),
    click.option("--allow-outside", is_flag=True, help="Follow symlinks and manifest paths that lead out of DATA_DIR."),
    click.option(
        "--assume-unchanged",
        is_flag=True,
        help="Take files whose path the cache holds as unchanged, without checking their size and time: "
        "only new paths are read. For collections that only grow; an edited file keeps its old vector.",
    ),
    _QUIET,
]


@main.command(cls=_Command, renamed={"--output": "--out"})
@click.argument("data_dir")
@_apply(_EXTRACT_OPTIONS)
@_errors_as_messages
def extract(data_dir, out, quiet, **options):
    """Extract pooled Xception vectors of every image in DATA_DIR into an HDF5 cache.

    DATA_DIR holds train/, validation/ (or val/) and test/ folders of class folders, or class
    folders only (split by content hash), or the files named by --manifest. DATA_DIR may be an
    object store's URL (s3://bucket/photos, gs://, az://; pip install 'featcache[s3]' etc.).
    Rerunning computes only new images; an interrupted run resumes where it stopped.
    """
    from featcache import api

    result = api.extract(data_location(data_dir), out, progress=not quiet, **_given(options))
    _echo(result.summary())


@main.command()
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_errors_as_messages
def info(cache, as_json):
    """Show what CACHE holds: rows per split and class, provenance and quarantine."""
    from featcache import api

    summary = api.info(cache)
    _echo(json.dumps(summary.to_dict(), indent=2, default=str) if as_json else summary.summary())


@main.command()
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@_errors_as_messages
def compact(cache):
    """Rewrite CACHE's shards so each live vector is stored once, in few full shards.

    Reclaims the space of removed images and merges the small shards every update adds; a
    cache of an older format is upgraded. Safe to kill at any moment.
    """
    from featcache import api

    _echo(api.compact(cache).summary())


_HEAD_HELP = "Folder of a trained head (head.keras + head.json)."


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--head", type=click.Path(path_type=Path), required=True, help=_HEAD_HELP)
@_option(PredictConfig, "top_k", "Classes to show per image, best first.")
@_option(PredictConfig, "batch_size", "Images per forward pass.")
@click.option("--weights", default=None, help=_WEIGHTS_HELP + " Other weights are refused.")
@_option(PredictConfig, "workers", "Image decoding threads.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of {path, predictions, error}.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV rows path,rank,class,probability,error.")
@_QUIET
@_errors_as_messages
def predict(images, head, as_json, as_csv, quiet, **options):
    """Classify IMAGES (files, or folders searched recursively) with the head in --head.

    Each image is decoded, resized and preprocessed exactly as the head's cache recorded and
    embedded with the same frozen backbone. Files that cannot be read are reported with the
    reason and do not stop the run.
    """
    if as_json and as_csv:
        raise click.UsageError("pass --json or --csv, not both")
    from featcache import api

    result = api.predict(images, head, progress=not quiet, **_given(options))
    if as_json:
        _echo(json.dumps([p.to_dict() for p in result.predictions], indent=2))
    elif as_csv:
        _echo(result.csv(), nl=False)
    else:
        _echo(result.text())
    _echo(result.status(), err=True)


@main.command()
@click.option("--head", type=click.Path(path_type=Path), required=True, help=_HEAD_HELP)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="model.keras, model.tflite or model.onnx, or a folder for --format saved_model.",
)
@_option(
    ExportConfig,
    "format",
    "A .keras file, a TensorFlow SavedModel folder, a LiteRT .tflite file or an ONNX file.",
    type=click.Choice(EXPORT_FORMATS),
)
@_option(
    ExportConfig,
    "quantize",
    "For tflite: keep float32 weights, store them as int8 (dynamic) or as float16.",
    type=click.Choice(QUANTIZATIONS),
)
@click.option(
    "--check-images",
    type=click.Path(path_type=Path),
    default=None,
    help="A folder of images (searched recursively) or one image to check the written model on. "
    "[default: the validation split of the head's cache]",
)
@click.option("--weights", default=None, help=_WEIGHTS_HELP + " Other weights are refused.")
@_errors_as_messages
def export(head, out, **options):
    """Write one end-to-end model: RGB pixels -> preprocessing -> frozen Xception -> head -> probabilities.

    The input is (n, S, S, 3) RGB pixels in [0, 255] (uint8 or float for keras and saved_model,
    float32 for tflite and onnx) at the cache's image size S, resized from the decoded image as the
    cache recorded. The .keras file loads with keras.saving.load_model(path, safe_mode=True) without
    featcache, the .tflite file with LiteRT (pip install ai-edge-litert) and the .onnx file with ONNX
    Runtime; the class names are written to <stem>.classes.json beside it. Before it is renamed into
    place, the written model is run by that runtime on the check images: its top class must be
    featcache predict's (within 1e-4 in probability; on 99% of the images for --quantize dynamic or
    float16), else nothing is left at --out.
    """
    from featcache import api

    options["check_images"] = (options["check_images"],) if options["check_images"] else None
    _echo(api.export(head, out, **_given(options)).summary())


@main.command()
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@_option(VerifyConfig, "sample", "Random rows to recompute.")
@_option(VerifyConfig, "tolerance", "Largest absolute difference allowed.")
@_option(VerifyConfig, "rel_tolerance", "Largest difference allowed relative to the row's largest stored value.")
@_option(VerifyConfig, "seed", "Seed of the row sample.")
@click.option("--weights", default=None, help=_WEIGHTS_HELP)
@_option(VerifyConfig, "batch_size", "Images per forward pass.")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="Where the images are, if not where recorded."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_errors_as_messages
def verify(cache, as_json, **options):
    """Recompute random rows of CACHE with the live model and compare them with the stored vectors.

    Exits with 1 when they differ by more than --tolerance, naming the likely causes. Rows whose
    file changed or vanished since extraction are reported and not counted.
    """
    from featcache import api

    result = api.verify(cache, **_given(options))
    _echo(json.dumps(result.to_dict(), indent=2) if as_json else result.summary())
    if not result.passed:
        first = result.causes[0] if result.causes else "see above"
        raise click.ClickException(f"{result.cache} does not match the live model; most likely {first}")


#: the former spellings of the head's options, taken until the next release
_HEAD_RENAMED = {"--val-fraction": "--holdout-fraction", "--augmented": "--with-views"}
_SWEEP_RENAMED = {**_HEAD_RENAMED, "--c": "--baseline-c"}
_DROP_LABEL_ISSUES = click.option(
    "--drop-label-issues",
    metavar="N|FILE",
    default=None,
    help="Train without likely mislabelled train rows: the first N that featcache labels ranks, or the paths "
    "in the path column of a CSV FILE (labels.csv cut to the rows to drop).",
)
#: the options of the Keras head, shared by train-head and compare (names as in HeadConfig)
_HEAD_OPTIONS = [
    _option(HeadConfig, "lr", "Adam learning rate (the recipe's 0.01)."),
    _option(HeadConfig, "batch_size", "Vectors per training step."),
    _option(HeadConfig, "epochs", "Passes over the train split."),
    _list_option(HeadConfig, "inner", int, "Units of each Dense relu layer before the output, one per layer."),
    _option(HeadConfig, "dropout", "Dropout rate after each inner layer (on the input when there is none)."),
    _option(HeadConfig, "seed", "Seed of initialisation and shuffling; same seed, same history."),
    _option(
        HeadConfig,
        "early_stopping",
        "Stop after PATIENCE epochs without a better validation accuracy.",
        type=int,
        metavar="PATIENCE",
        show_default=False,
    ),
    _option(
        HeadConfig,
        "holdout_fraction",
        "Share of train rows held out for validation when the cache has no validation split.",
    ),
    click.option(
        "--memory-budget",
        metavar="SIZE",
        default=None,
        help="Vectors to hold in memory, e.g. 1GB, 500MB, 2GiB or bytes; above it the splits are read from the "
        f"cache in chunks, with the same results. Default: {MEMORY_BUDGET_FRACTION:.0%} of the available memory.",
    ),
    click.option(
        "--with-views",
        is_flag=True,
        help="Train on the cache's augmented views (extract --augment K): each epoch shows each train image as "
        "its clean vector or one of its views, drawn uniformly. compare also fits the baseline on all views.",
    ),
    click.option(
        "--drop-leaks",
        is_flag=True,
        help="Leave out the validation and test rows that featcache leaks finds in an earlier split; compare "
        "reports the scores with them too.",
    ),
    _DROP_LABEL_ISSUES,
]


@main.command(cls=_Command, renamed=_SWEEP_RENAMED)
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@click.option(
    "-o", "--out", type=click.Path(path_type=Path), default=DEFAULT_SWEEP_DIR, show_default=True,
    help="Folder of the sweep: runs/, sweep.csv, sweep.json, sweep.md, plots, best-head/.",
)  # fmt: skip
@_list_option(SweepConfig, "lr", float, "Adam learning rates.")
@_list_option(SweepConfig, "inner", int, "Units of one inner Dense relu layer; 0 for none.")
@_list_option(SweepConfig, "dropout", float, "Dropout rates.")
@_option(SweepConfig, "seeds", "Seeds per configuration.")
@_option(SweepConfig, "epochs", "Epochs per run.")
@_option(SweepConfig, "batch_size", "Vectors per training step.")
@click.option("--jobs", type=int, default=None, help="Worker processes. Default: the number of cores.")
@_list_option(SweepConfig, "baseline_c", float, "C values of a logistic-regression baseline to sweep too.")
@_list_option(SweepConfig, "heatmap", str, "The two axes of the heatmap.")
@_option(SweepConfig, "holdout_fraction", "As for train-head.")
@click.option("--memory-budget", metavar="SIZE", default=None, help="As for train-head.")
@click.option("--with-views", is_flag=True, help="Train on the cache's augmented views, as train-head --with-views.")
@click.option("--drop-leaks", is_flag=True, help="Leave out leaking validation rows, as train-head --drop-leaks.")
@_DROP_LABEL_ISSUES
@_QUIET
@_errors_as_messages
def sweep(cache, out, quiet, **options):
    """Train every head configuration of a grid for several seeds on CACHE, rank them, keep the best.

    Runs of one seed and inner size train together on the same batches, each as train-head would train
    it; each group's result is committed on its own, so an interrupted sweep resumes where it stopped. The best
    configuration is trained again with train-head into OUT/best-head, for predict and export.
    """
    from featcache import api

    result = api.sweep(cache, out, progress=not quiet, **_given(options))
    _echo(result.summary())


@main.command()
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@click.option(
    "-o", "--out", type=click.Path(path_type=Path), default=DEFAULT_LEAKS_DIR, show_default=True,
    help="Folder for leaks.json and leaks.csv.",
)  # fmt: skip
@_option(LeaksConfig, "candidate_cosine", "Cosine above which a nearest neighbour in an earlier split is checked.")
@_option(LeaksConfig, "min_inliers", "Least matched keypoints that one geometric transform carries onto each other.")
@_option(LeaksConfig, "min_inlier_share", "Least share of the keypoints (of the image with more) it carries.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="The images' folder, if moved.")
@_QUIET
@_errors_as_messages
def leaks(cache, out, quiet, **options):
    """Find images that leak between the splits of CACHE: exact and near duplicates.

    Exact: the same file content in two splits (or in two classes). Near: a validation or test
    image among the nearest of an earlier split by cosine of the cached vectors, confirmed when the
    local features of both images (one of them also mirrored) agree on one geometric transform.
    """
    from featcache import api

    _echo(api.leaks(cache, out, progress=not quiet, **_given(options)).summary())


@main.command()
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@click.option(
    "-o", "--out", type=click.Path(path_type=Path), default=DEFAULT_LABELS_DIR, show_default=True,
    help="Folder for labels.csv, labels.json and report.html.",
)  # fmt: skip
@_option(
    LabelsConfig, "split", "The split whose labels are checked.", type=click.Choice(["train", "validation", "test"])
)
@_option(LabelsConfig, "folds", "Folds of the out-of-fold probabilities.")
@_option(LabelsConfig, "baseline_c", "Inverse regularization strength of the logistic regression.")
@_option(LabelsConfig, "seed", "Seed of the folds.")
@_errors_as_messages
def labels(cache, out, **options):
    """Rank the rows of a split of CACHE by how likely their label is wrong.

    Each row's class probabilities come from a standardized logistic regression fitted on the other
    folds; rows are ranked by the probability of their own label, lowest first. labels.csv lists
    every row with its given and suggested class: look at the first ones and fix what is wrong.
    """
    from featcache import api

    _echo(api.labels(cache, out, **_given(options)).summary())


@main.command("train-head", cls=_Command, renamed=_HEAD_RENAMED)
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=DEFAULT_HEAD_DIR,
    show_default=True,
    help="Folder to save the head into (head.keras, head.json, history.csv, learning_curves.png).",
)
@_apply(_HEAD_OPTIONS)
@click.option(
    "--tensorboard", type=click.Path(path_type=Path), default=None, help="Also write TensorBoard logs into this folder."
)
@_errors_as_messages
def train_head(cache, out, **options):
    """Train a Keras head on the cached vectors of CACHE and keep its best epoch.

    Trains on the train split, judges every epoch on the validation split (held out from train
    when the cache has none) and keeps the epoch with the best validation accuracy.
    """
    from featcache import api

    _echo(api.train_head(cache, out, **_given(options)).summary())


@main.command(cls=_Command, renamed=_HEAD_RENAMED)
@click.argument("caches", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=DEFAULT_COMPARE_DIR,
    show_default=True,
    help="Folder for report.md, report.json, the PNGs and both models.",
)
@click.option(
    "--head",
    type=click.Path(path_type=Path),
    default=None,
    help="Use this trained head folder instead of training one (head options are then ignored).",
)
@_apply(_HEAD_OPTIONS)
@_errors_as_messages
def compare(caches, out, head, **options):
    """Compare the Keras head with a tuned logistic-regression baseline on the same splits of CACHE.

    Both are scored on validation and test (accuracy, macro-F1, log loss, per-class precision and
    recall, confusion matrices, timings), and the test accuracy difference gets McNemar's test and
    a bootstrap interval. Given several caches (CACHE... , e.g. one per --backbone), each is
    compared with the same options in OUT/<backbone>/, and one table and plot set them side by side.
    """
    from featcache import api

    _echo(api.compare(list(caches) or [DEFAULT_CACHE], out, head=head, **_given(options)).summary())


@main.command("demo-data")
@_errors_as_messages
def demo_data():
    """Print the folder of the demo's images, downloading them once.

    That is $FEATCACHE_DATA when set. Otherwise the archive at $FEATCACHE_DEMO_URL (default: the
    clothing-dataset-small repository on GitHub) is downloaded once with keras.utils.get_file into
    Keras' cache folder ($KERAS_HOME, else ~/.keras) and unpacked there. make demo extracts the folder
    printed.
    """
    from featcache import api

    # Keras shows its download on stdout, which carries only the folder, for `make demo` to read
    with contextlib.redirect_stdout(sys.stderr):
        folder = api.demo_data()
    _echo(str(folder))
