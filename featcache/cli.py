"""The command line: parses options, calls one library function, prints its summary."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from featcache import tf_logs
from featcache.config import DEFAULT_CACHE, DEFAULT_COMPARE_DIR, DEFAULT_HEAD_DIR, PRECISIONS, RUNTIMES, WEIGHTS_ENV
from featcache.errors import FeatcacheError
from featcache.images import INTERPOLATIONS


def _errors_as_messages(func):
    """A library error becomes one line on stderr and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FeatcacheError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; committed work is kept, rerun the same command to finish", err=True)
            sys.exit(130)

    return wrapper


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


@main.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=DEFAULT_CACHE,
    show_default=True,
    help="The HDF5 cache to write or update.",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV with columns path,label[,split]; paths relative to DATA_DIR.",
)
@click.option(
    "--image-size", type=int, default=150, show_default=True, help="Square input size in pixels (at least 71)."
)
@click.option(
    "--interpolation",
    type=click.Choice(INTERPOLATIONS),
    default="nearest",
    show_default=True,
    help="Pillow resize filter; nearest is what Keras' load_img and ImageDataGenerator use.",
)
@click.option(
    "--exif-transpose/--no-exif-transpose",
    default=True,
    show_default=True,
    help="Rotate images as their EXIF orientation says. --no-exif-transpose ignores it, as Keras' load_img "
    "does, for exactly its pixels. Part of the cache fingerprint.",
)
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per forward pass.")
@click.option(
    "--weights",
    default=None,
    help=f"'imagenet' (Keras cache or download), a weights file, or 'none' (random, for tests). "
    f"Default: ${WEIGHTS_ENV} or imagenet.",
)
@click.option(
    "--val-fraction",
    type=float,
    default=0.1,
    show_default=True,
    help="Share of validation images when DATA_DIR has class folders only.",
)
@click.option(
    "--test-fraction",
    type=float,
    default=0.1,
    show_default=True,
    help="Share of test images when DATA_DIR has class folders only.",
)
@click.option("--workers", type=int, default=2, show_default=True, help="Image decoding threads.")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="float32",
    show_default=True,
    help="float32: exact. bfloat16: OpenVINO with a bf16 hint, about 2x faster on CPUs with native bf16 "
    "(AVX-512 BF16, AMX), slower on others. Part of the cache fingerprint.",
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=None,
    help="Who runs the model. Default: tensorflow for float32, openvino for bfloat16 "
    "(pip install 'featcache[openvino]'). Part of the cache fingerprint.",
)
@click.option("--strict", is_flag=True, help="Fail instead of quarantining files that cannot be used.")
@click.option("--overwrite", is_flag=True, help="Replace a cache made with other settings.")
@click.option("--allow-outside", is_flag=True, help="Follow symlinks and manifest paths that lead out of DATA_DIR.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_errors_as_messages
def extract(data_dir, output, quiet, weights, **options):
    """Extract pooled Xception vectors of every image in DATA_DIR into an HDF5 cache.

    DATA_DIR holds train/, validation/ (or val/) and test/ folders of class folders, or class
    folders only (split by content hash), or the files named by --manifest. Rerunning computes
    only new images; an interrupted run resumes where it stopped.
    """
    from featcache.api import extract as run
    from featcache.config import default_weights

    result = run(data_dir, output, progress=not quiet, weights=weights or default_weights(), **options)
    click.echo(_extract_summary(result))


def _extract_summary(result) -> str:
    lines = [f"cache: {result.output}  ({result.rows} rows, {len(result.class_names)} classes)"]
    for split, count in result.per_split.items():
        if count:
            per = result.per_class.get(split, {})
            detail = ", ".join(f"{name} {per.get(name, 0)}" for name in result.class_names)
            lines.append(f"  {split:<10} {count:>7}   {detail}")
    rate = f", {result.images_per_s:.1f} images/s while computing" if result.computed else ""
    lines.append(
        f"computed {result.computed}, reused {result.reused}, quarantined {len(result.quarantine)}; "
        f"{result.seconds:.1f} s in all{rate}"
    )
    for entry in result.quarantine[:10]:
        lines.append(f"  quarantined {entry.path}: {entry.reason}")
    if len(result.quarantine) > 10:
        lines.append(f"  ... and {len(result.quarantine) - 10} more (featcache info {result.output})")
    return "\n".join(lines)


@main.command()
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_errors_as_messages
def info(cache, as_json):
    """Show what CACHE holds: rows per split and class, provenance and quarantine."""
    from featcache.api import info as run

    summary = run(cache)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2, default=str))
        return
    click.echo(_info_text(summary))


def _info_text(summary) -> str:
    attrs = summary.attrs
    lines = [f"{summary.path}: {summary.rows} rows, {len(summary.class_names)} classes"]
    lines.append("  " + " ".join(f"{s} {n}" for s, n in summary.per_split.items()))
    header = "  " + " " * 12 + "".join(f"{s[:10]:>12}" for s in summary.per_split)
    lines.append(header)
    for name in summary.class_names:
        counts = "".join(f"{summary.per_class.get(s, {}).get(name, 0):>12}" for s in summary.per_split)
        lines.append(f"  {name[:12]:<12}{counts}")
    lines.append("provenance:")
    for key in sorted(attrs):
        if key != "fingerprint_fields":
            lines.append(f"  {key}: {attrs[key]}")
    lines.append(f"quarantine: {len(summary.quarantine)} file(s)")
    for entry in summary.quarantine:
        lines.append(f"  {entry.path}: {entry.reason}")
    if summary.pending_parts:
        lines.append(
            f"unfinished extraction: {summary.pending_parts} committed part(s) not yet in the cache; "
            f"rerun featcache extract to fold them in"
        )
    return "\n".join(lines)


_HEAD_HELP = "Folder of a trained head (head.keras + head.json)."
_WEIGHTS_HELP = (
    f"Backbone weights: 'imagenet', a weights file or 'none'. Default: ${WEIGHTS_ENV} or the weights the cache "
    f"recorded, whichever matches it."
)


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--head", type=click.Path(path_type=Path), required=True, help=_HEAD_HELP)
@click.option("--top-k", type=int, default=3, show_default=True, help="Classes to show per image, best first.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per forward pass.")
@click.option("--weights", default=None, help=_WEIGHTS_HELP + " Other weights are refused.")
@click.option("--workers", type=int, default=2, show_default=True, help="Image decoding threads.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of {path, predictions, error}.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV rows path,rank,class,probability,error.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_errors_as_messages
def predict(images, head, as_json, as_csv, quiet, **options):
    """Classify IMAGES (files, or folders searched recursively) with the head in --head.

    Each image is decoded, resized and preprocessed exactly as the head's cache recorded and
    embedded with the same frozen backbone. Files that cannot be read are reported with the
    reason and do not stop the run.
    """
    if as_json and as_csv:
        raise click.UsageError("pass --json or --csv, not both")
    from featcache.api import predict as run

    result = run(images, head, progress=not quiet, **options)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in result.predictions], indent=2))
    elif as_csv:
        click.echo(_predictions_csv(result), nl=False)
    else:
        for p in result.predictions:
            shown = f"error: {p.error}" if p.error else ", ".join(f"{name} {prob:.3f}" for name, prob in p.top)
            click.echo(f"{p.path}: {shown}")
    n_bad = len(result.failed)
    click.echo(
        f"classified {len(result.predictions) - n_bad} image(s), {n_bad} could not be read; {result.seconds:.1f} s",
        err=True,
    )


def _predictions_csv(result) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "rank", "class", "probability", "error"])
    for p in result.predictions:
        if p.error:
            writer.writerow([p.path, "", "", "", p.error])
        for rank, (name, prob) in enumerate(p.top, start=1):
            writer.writerow([p.path, rank, name, f"{prob:.6f}", ""])
    return buffer.getvalue()


@main.command()
@click.option("--head", type=click.Path(path_type=Path), required=True, help=_HEAD_HELP)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="model.keras, or a folder for --format saved_model."
)
@click.option(
    "--format",
    type=click.Choice(["keras", "saved_model"]),
    default="keras",
    show_default=True,
    help="A .keras file or a TensorFlow SavedModel folder.",
)
@click.option("--weights", default=None, help=_WEIGHTS_HELP + " Other weights are refused.")
@_errors_as_messages
def export(head, out, format, weights):
    """Write one end-to-end model: RGB pixels -> preprocessing -> frozen Xception -> head -> probabilities.

    The input is (n, S, S, 3) pixels, uint8 or float in [0, 255], at the cache's image size S,
    resized from the decoded image as the cache recorded. The .keras file loads with
    keras.saving.load_model(path, safe_mode=True) without featcache; the class names are written
    to <stem>.classes.json beside it and into the model as featcache.json.
    """
    from featcache.api import export as run

    result = run(head, out, format=format, weights=weights)
    size = result.image_size
    click.echo(f"model: {result.out} ({result.format}; input (n, {size}, {size}, 3) RGB pixels in [0, 255])")
    click.echo(f"classes: {result.classes_path} ({', '.join(result.class_names)})")
    click.echo(f"checked: probabilities within {result.max_prob_diff:.1e} of featcache predict")


@main.command()
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@click.option("--sample", type=int, default=32, show_default=True, help="Random rows to recompute.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Largest absolute difference allowed.")
@click.option(
    "--rel-tolerance",
    type=float,
    default=1e-3,
    show_default=True,
    help="Largest difference allowed relative to the row's largest stored value.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the row sample.")
@click.option("--weights", default=None, help=_WEIGHTS_HELP)
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per forward pass.")
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
    from featcache.api import verify as run

    result = run(cache, **options)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else _verify_text(result))
    if not result.passed:
        first = result.causes[0] if result.causes else "see above"
        raise click.ClickException(f"{result.cache} does not match the live model; most likely {first}")


def _verify_text(result) -> str:
    verdict = "OK" if result.passed else "MISMATCH"
    lines = [
        f"{result.cache}: recomputed {result.compared} of {result.sampled} sampled rows with weights {result.weights}",
        f"  max abs diff {result.max_abs_diff:.3g} (tolerance {result.tolerance:g}), "
        f"max relative diff {result.max_rel_diff:.3g} (tolerance {result.rel_tolerance:g}), "
        f"min cosine {result.min_cosine:.6f}: {verdict}",
    ]
    if result.worst_path and not result.passed:
        lines.append(f"  largest difference: {result.worst_path}")
    for path, reason in result.skipped:
        lines.append(f"  skipped {path}: {reason}")
    if result.causes:
        lines.append("likely causes:")
        lines.extend(f"  - {cause}" for cause in result.causes)
    return "\n".join(lines)


def _head_options(func):
    """The options of the Keras head, shared by train-head and compare (names as in HeadConfig)."""
    options = [
        click.option(
            "--lr", type=float, default=0.01, show_default=True, help="Adam learning rate (the recipe's 0.01)."
        ),
        click.option("--batch-size", type=int, default=32, show_default=True, help="Vectors per training step."),
        click.option("--epochs", type=int, default=10, show_default=True, help="Passes over the train split."),
        click.option(
            "--inner",
            type=int,
            multiple=True,
            help="Units of a Dense relu layer before the output; repeat for more layers.",
        ),
        click.option(
            "--dropout",
            type=float,
            default=0.0,
            show_default=True,
            help="Dropout rate after each inner layer (on the input when there is none).",
        ),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of initialisation and shuffling; same seed, same history.",
        ),
        click.option(
            "--early-stopping",
            type=int,
            default=None,
            metavar="PATIENCE",
            help="Stop after PATIENCE epochs without a better validation accuracy.",
        ),
        click.option(
            "--val-fraction",
            type=float,
            default=0.2,
            show_default=True,
            help="Share of train rows held out when the cache has no validation split.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command("train-head")
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=DEFAULT_HEAD_DIR,
    show_default=True,
    help="Folder to save the head into (head.keras, head.json, history.csv, learning_curves.png).",
)
@_head_options
@click.option(
    "--tensorboard", type=click.Path(path_type=Path), default=None, help="Also write TensorBoard logs into this folder."
)
@_errors_as_messages
def train_head(cache, out, **options):
    """Train a Keras head on the cached vectors of CACHE and keep its best epoch.

    Trains on the train split, judges every epoch on the validation split (held out from train
    when the cache has none) and keeps the epoch with the best validation accuracy.
    """
    from featcache.api import train_head as run

    result = run(cache, out, **options)
    click.echo(_train_head_summary(cache, result))


def _train_head_summary(cache, result) -> str:
    m, meta = result.metrics, result.metadata
    held = "; held out from train, the cache has no validation split" if m["validation_carved"] else ""
    return "\n".join(
        [
            f"head: {result.out}  ({len(meta['class_names'])} classes, {meta['feature_dim']}-d vectors of {cache})",
            f"best epoch {result.best_epoch} of {m['epochs_run']}: train accuracy {m['train_accuracy']:.4f}, "
            f"validation accuracy {m['val_accuracy']:.4f} (loss {m['train_loss']:.4f} / {m['val_loss']:.4f})",
            f"trained in {m['fit_seconds']:.1f} s on {m['n_train']} rows, validated on {m['n_validation']}{held}",
            f"saved: {result.out / 'head.keras'}, head.json, history.csv, learning_curves.png",
        ]
    )


@main.command()
@click.argument("cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE)
@click.option(
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
@_head_options
@_errors_as_messages
def compare(cache, out, head, **options):
    """Compare the Keras head with a tuned logistic-regression baseline on the same splits of CACHE.

    Both are scored on validation and test (accuracy, macro-F1, log loss, per-class precision and
    recall, confusion matrices, timings), and the test accuracy difference gets McNemar's test and
    a bootstrap interval.
    """
    from featcache.api import compare as run

    result = run(cache, out, head=head, **options)
    click.echo(result.table())
    click.echo(f"report: {result.out / 'report.md'} (and report.json, {len(result.files) - 2} PNGs, baseline.npz)")
