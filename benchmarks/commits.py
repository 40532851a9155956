"""A first extract committing a shard every batch (``--commit-seconds 0``) against the default interval.

    python -m benchmarks.commits                       # 200,000 tiny PNGs, each way once
    python -m benchmarks.commits --images 20000 --repeats 3

Both extracts run on the same tiny PNGs (10 class folders) with the 2048-d fake backbone, each in a
fresh process (:mod:`benchmarks.scale_op`), taking turns when repeated: seconds in process (imports
before the timer), peak RSS of the whole process (VmHWM), bytes written, shards made; then plain h5py
opens each cache's ``/features`` in a fresh process and reads 10 rows, for the memory its virtual
dataset's mappings take. Everything is written in one work folder on disk, deleted at the end.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
from pathlib import Path

import click

from benchmarks.scale import ScaleRun, tiny_images
from featcache.cache.shards import list_shards, shards_dir
from featcache.config import ExtractConfig

log = logging.getLogger("benchmarks")
WAYS = {"every batch (--commit-seconds 0)": 0.0, f"default (--commit-seconds {ExtractConfig.commit_seconds:g})": None}


def measure(run: ScaleRun, data: Path, images: int, repeats: int) -> dict[str, list[dict]]:
    """Each way's records, ``repeats`` fresh extracts of ``data`` each, taking turns."""
    found: dict[str, list[dict]] = {way: [] for way in WAYS}
    for k in range(repeats):
        for way, seconds in WAYS.items():
            cache = run.work / f"cache-{k}-{seconds}" / "features.h5"
            flags = [] if seconds is None else ["--commit-seconds", str(seconds)]
            record = run.op(f"extract, {way}", images, "extract", *flags, str(data), str(cache), keep=False)
            opened = run.op("open /features", images, "open-features", str(cache), keep=False)
            if record is not None and opened is not None:
                record |= {"shards": len(list_shards(shards_dir(cache))), "open_mb": opened["rss_added_mb"]}
                found[way].append(record)
            shutil.rmtree(cache.parent)
    return found


def table(found: dict[str, list[dict]]) -> str:
    lines = [
        "| first extract | runs | in process, s (median, range) | peak RSS, MB | written, MB | shards "
        "| opening /features, MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for way, records in found.items():
        if not records:
            lines.append(f"| {way} | 0 | failed | | | | |")
            continue
        seconds = [r["seconds"] for r in records]
        lines.append(
            f"| {way} | {len(records)} | {statistics.median(seconds):.1f} ({min(seconds):.1f}-{max(seconds):.1f}) | "
            f"{max(r['peak_rss_mb'] for r in records):.0f} | {records[-1]['written_mb']:.0f} | "
            f"{records[-1]['shards']:,} | {max(r['open_mb'] for r in records):.0f} |"
        )
    medians = [statistics.median(r["seconds"] for r in records) for records in found.values() if records]
    if len(medians) == 2:
        lines.append(f"\nevery batch / default, median seconds: {medians[0] / medians[1]:.2f}x")
    return "\n".join(lines)


@click.command()
@click.option("--images", type=click.IntRange(10), default=200_000, show_default=True, help="Tiny PNGs to extract.")
@click.option("--repeats", type=click.IntRange(1), default=1, show_default=True, help="Extracts each way.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder to work in.")
def main(images, repeats, work):
    """Time a first extract committing every batch against committing every few seconds."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    parent = Path(work or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="featcache-commits-", dir=parent))
    try:
        run = ScaleRun(folder)
        with run.step(f"{images:,} tiny PNGs"):
            tiny_images(folder / "images", images, "img", seed=0)
        click.echo(table(measure(run, folder / "images", images, repeats)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
