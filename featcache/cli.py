"""The command line: parses options, calls one library function, prints its summary."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from featcache.config import DEFAULT_CACHE, WEIGHTS_ENV
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
@click.option("-v", "--verbose", is_flag=True, help="Log diagnostics to stderr.")
@click.version_option(package_name="featcache")
def main(verbose: bool) -> None:
    """featcache: run a frozen backbone once, cache its vectors, train heads in seconds."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True, help="The HDF5 cache to write or update.")
@click.option("--manifest", type=click.Path(path_type=Path), default=None, help="CSV with columns path,label[,split]; paths relative to DATA_DIR.")
@click.option("--image-size", type=int, default=150, show_default=True, help="Square input size in pixels (at least 71).")
@click.option("--interpolation", type=click.Choice(INTERPOLATIONS), default="bilinear", show_default=True, help="Pillow resize filter.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per forward pass.")
@click.option("--weights", default=None, help=f"'imagenet' (Keras cache or download), a weights file, or 'none' (random, for tests). Default: ${WEIGHTS_ENV} or imagenet.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True, help="Share of validation images when DATA_DIR has class folders only.")
@click.option("--test-fraction", type=float, default=0.1, show_default=True, help="Share of test images when DATA_DIR has class folders only.")
@click.option("--workers", type=int, default=2, show_default=True, help="Image decoding threads.")
@click.option("--strict", is_flag=True, help="Fail instead of quarantining files that cannot be used.")
@click.option("--overwrite", is_flag=True, help="Replace a cache made with other settings.")
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
    lines.append(
        f"computed {result.computed}, reused {result.reused}, quarantined {len(result.quarantine)}; "
        f"{result.seconds:.1f} s, {result.images_per_s:.1f} images/s computed"
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
    from featcache.info import info as run

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
