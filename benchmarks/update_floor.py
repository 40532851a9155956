"""What an update of a large cache costs beside a bare walk of its data folder: one listing, one stat per file.

    python -m benchmarks.update_floor [--rows 200000] [--added 1000] [--repeats 5] [--old /tmp/oldcode]

The inputs of :mod:`benchmarks.scale`'s adds (tiny PNGs in ``train/<class>/`` folders and their cache
written directly, with the 2048-d fake backbone's fingerprint) are made once, on disk, in a work folder
deleted at the end. Then, ``--repeats`` times, taking turns so that a slow spell of a shared machine
falls on all of them:

- extract by the old source tree (``--old``, a checkout of another commit) and by this one, each in a
  fresh process (:mod:`benchmarks.scale_op`, importing featcache and benchmarks from that tree), on a
  copy of the cache as it was: a **rerun** over the unchanged folder (nothing to compute), then, once
  ``--added`` new images are in the folder, an **add** that computes them;
- the **floor**: a bare script (:data:`WALK`, no featcache, no imports beyond the standard library's
  ``os``, ``sys``, ``time`` and ``json``) that lists the folder recursively with ``os.scandir`` and stats
  each file once with ``os.stat``, counting them: what an update that notices changed files cannot go
  below in one Python thread (compiled code stat-ing on several threads, as older trees did, can).

Each is timed in process (the operation alone, imports done) and as a whole process (interpreter
start-up and imports in); peak RSS is the process's VmHWM. The folder's entries are in the page cache
for all of them (they were just written), as they are for a rerun soon after a first extract.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from benchmarks import workloads as w
from benchmarks.fake_extract import DIM
from benchmarks.scale import (
    FOLDER_ROWS,
    MB,
    ROOT,
    ScaleRun,
    cache_attrs,
    filesystem,
    linked_copy,
    tiny_images,
    write_vectors,
)

#: the floor: list the folder recursively, stat each file once; prints seconds, files and peak RSS as JSON
WALK = """
import json, os, sys, time

def walk(folder):
    files = 0
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            files += walk(entry.path)
        else:
            os.stat(entry.path)
            files += 1
    return files

start = time.perf_counter()
files = walk(sys.argv[1])
seconds = time.perf_counter() - start
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]
print(json.dumps({"seconds": round(seconds, 4), "files": files, "vm_hwm_mb": round(int(hwm) / 1024, 1)}))
"""
#: prints where a process run with :meth:`ScaleRun.env` imports featcache and benchmarks from, and whether the
#: compiled scan of older trees is used (None where the tree has none)
SOURCES = """
import json, featcache, benchmarks.scale_op
try:
    from featcache.extraction import fsscan
    native = fsscan.native is not None
except ImportError:
    native = None
print(json.dumps({"featcache": featcache.__file__, "benchmarks": benchmarks.__file__, "compiled_scan": native}))
"""
log = logging.getLogger("benchmarks")


def sources(scale: ScaleRun, tree: Path) -> dict:
    """Where a measured process of ``tree`` imports from; UsageError when featcache does not come from ``tree``."""
    done = w.run_process([sys.executable, "-c", SOURCES], scale.work, scale.env(tree))
    if done.returncode != 0:
        raise click.UsageError(f"featcache of {tree} cannot be imported: {done.stderr.strip()[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(found["featcache"]).resolve().is_relative_to(tree):
        raise click.UsageError(f"a process meant to run {tree} imports featcache from {found['featcache']}")
    if found["compiled_scan"] is False:
        scale.notes.append(f"{tree}: its compiled scan is not built, it runs its Python fallback")
    git = ["git", "-C", str(tree)]
    found["commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run([*git, "diff", "--name-only", "HEAD", "--", "featcache"], capture_output=True, text=True)
    found["uncommitted"] = changed.stdout.split()
    found |= stage_one_code(tree)
    if found["uncommitted"]:
        scale.notes.append(f"{tree}: measured with uncommitted changes to {', '.join(found['uncommitted'])}")
    return found


def stage_one_code(tree: Path) -> dict:
    """Lines of Python (``wc -l``) of stage one's packages in ``tree``, and its compiled sources."""
    packages = [tree / "featcache" / "extraction", tree / "featcache" / "cache"]
    lines = sum(len(path.read_bytes().splitlines()) for folder in packages for path in folder.glob("*.py"))
    compiled = [path.name for folder in packages for path in folder.glob("*.c")]
    return {"stage_one_lines": lines, "compiled_sources": compiled}


def turns(scale: ScaleRun, what: str, trees: dict[str, Path], data: Path, cache: Path, rows: int, repeats: int) -> dict:
    """Extract ``data`` (``rows`` images) by each tree into a fresh copy of ``cache``, then the floor walks ``data``,
    ``repeats`` times in turn; every run's record (None where it failed) by tree, and "floor"."""
    runs: dict[str, list] = {name: [] for name in [*trees, "floor"]}
    trial = scale.work / "trial" / cache.name
    for _ in range(repeats):
        for name, tree in trees.items():
            linked_copy(cache.parent, trial.parent)
            record = scale.op(f"{what}, {name}", rows, "extract", str(data), str(trial), keep=False, tree=tree)
            runs[name].append(record)
            shutil.rmtree(trial.parent)
        walk = [sys.executable, "-c", WALK, str(data)]
        runs["floor"].append(scale.measure(f"{what}, floor", rows, walk, scale.env(), keep=False))
    return runs


def summary(records: list[dict | None]) -> dict | None:
    """Medians and ranges of the runs that did not fail; None when all did."""
    done = [r for r in records if r is not None]
    if not done:
        return None
    out = {"runs": len(done)}
    for key, name in (("seconds", "in_process_s"), ("process_seconds", "whole_process_s"), ("peak_rss_mb", "rss_mb")):
        values = [r[key] for r in done]
        out |= {name: statistics.median(values), f"{name}_min": min(values), f"{name}_max": max(values)}
    for key in ("written_mb", "entry_bytes"):
        if all(key in r for r in done):
            out[key] = statistics.median(r[key] for r in done)
    for key in ("computed", "rows_after", "files", "others_cpu_share"):
        if key in done[0]:
            out[key] = [r[key] for r in done]
    return out


def run(work: Path, rows: int, added: int, repeats: int, old: Path, new: Path = ROOT) -> dict:
    """Everything measured, in the new folder ``work`` (deleted at the end)."""
    work.mkdir(parents=True)
    # the measured processes start in the work folder: `python -m` puts the current folder first on the path, and
    # the current folder may hold another tree's featcache
    with contextlib.chdir(work):
        try:
            if filesystem(work) in ("tmpfs", "ramfs"):
                raise click.UsageError(f"{work} is on {filesystem(work)}; choose a folder on disk")
            return measure(ScaleRun(work), rows, added, repeats, {"old": old, "new": new})
        finally:
            shutil.rmtree(work, ignore_errors=True)


def measure(scale: ScaleRun, rows: int, added: int, repeats: int, trees: dict[str, Path]) -> dict:
    """The inputs made in ``scale``'s work folder, the rerun and the add by each of ``trees`` and the floor timed in
    turns: their summaries, the ratios to the floor, the setup's seconds and the notes (a run that failed or did
    not compute, or list, what it should)."""
    result: dict = {"rows": rows, "added": added, "repeats": repeats, "trees": {k: str(v) for k, v in trees.items()}}
    result["sources"] = {name: sources(scale, tree) for name, tree in trees.items()}
    data, cache = scale.work / "images", scale.work / "cache" / "features.h5"
    with scale.step(f"{rows:,} tiny PNGs in sub-folders of {FOLDER_ROWS:,}"):
        made = tiny_images(data, rows, "img", seed=rows, per_folder=FOLDER_ROWS)
    with scale.step(f"cache of {rows:,} rows written directly"):
        write_vectors(cache, made, cache_attrs(data, "split-folders"))
    for name, tree in trees.items():  # the first process of a tree reads its libraries from disk; later ones do not
        trial = scale.work / "trial" / cache.name
        linked_copy(cache.parent, trial.parent)
        scale.op(f"warm-up, {name}", rows, "extract", str(data), str(trial), keep=False, tree=tree)
        shutil.rmtree(trial.parent)
    result["imports_rss_mb"] = {
        name: statistics.median(scale.op(f"imports, {name}", None, "imports", keep=False, tree=tree)["peak_rss_mb"]
                                for _ in range(repeats))
        for name, tree in trees.items()
    }  # fmt: skip
    found = {"rerun": turns(scale, "rerun", trees, data, cache, rows, repeats)}
    with scale.step(f"{added:,} new PNGs beside the {rows:,}"):
        tiny_images(data, added, "new", seed=rows + 1)
    found["add"] = turns(scale, f"add {added:,}", trees, data, cache, rows + added, repeats)
    expected = {
        "rerun": {"computed": 0, "rows_after": rows, "files": rows},
        "add": {"computed": added, "rows_after": rows + added, "files": rows + added},
    }
    for what, runs in found.items():
        result[what] = {name: summary(records) for name, records in runs.items()}
        for record in (r for records in runs.values() for r in records if r is not None):
            for key, want in expected[what].items():
                if record.get(key, want) != want:
                    scale.notes.append(f"{record['operation']}: {key} {record[key]}, expected {want}")
    result["ratios"] = ratios(result) | per_row(result)
    return result | {"setup_seconds": scale.setup, "notes": scale.notes}


def ratios(result: dict) -> dict:
    """Each tree's median over the floor's, in process and whole process, for the rerun and the add."""
    out = {}
    for what in ("rerun", "add"):
        floor = result[what]["floor"]
        for name in result["trees"]:
            mine = result[what][name]
            if mine and floor:
                for key in ("in_process_s", "whole_process_s"):
                    out[f"{what}_{name}_over_floor_{key[:-2]}"] = round(mine[key] / floor[key], 2)
    return out


def per_row(result: dict) -> dict:
    """Peak memory per cached row above a process that only makes extract's imports, and the add's bytes written
    over the new vectors plus the new entry file (where the tree's extract reports the entry file's size)."""
    out = {}
    for what, rows in (("rerun", result["rows"]), ("add", result["rows"] + result["added"])):
        for name in result["trees"]:
            mine = result[what][name]
            if mine:
                above = (mine["rss_mb"] - result["imports_rss_mb"][name]) * MB / rows
                out[f"{what}_{name}_bytes_per_row_above_imports"] = round(above)
    for name in result["trees"]:
        mine = result["add"][name]
        if mine and "entry_bytes" in mine:
            floor = result["added"] * DIM * 4 + mine["entry_bytes"]
            out[f"add_{name}_written_over_vectors_and_entry_file"] = round(mine["written_mb"] * MB / floor, 3)
    return out


def table(result: dict) -> str:
    """The figures as Markdown."""
    lines = [
        f"{result['rows']:,} rows, {result['added']:,} added; median (min-max) of {result['repeats']} runs each, "
        "taken in turns",
        "",
        "| operation | code | in process, s | whole process, s | peak RSS, MB | others' CPU (max) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for what in ("rerun", "add"):
        for name, f in result[what].items():
            if f is None:
                lines.append(f"| {what} | {name} | failed | | | |")
                continue
            spread = [
                f"{f[k]:.3f} ({f[k + '_min']:.3f}-{f[k + '_max']:.3f})" for k in ("in_process_s", "whole_process_s")
            ]
            share = max((s for s in f["others_cpu_share"] if s is not None), default=None)
            lines.append(
                f"| {what} | {name} | {spread[0]} | {spread[1]} | {f['rss_mb']:.0f} | "
                f"{'-' if share is None else f'{share:.0%}'} |"
            )
    lines += ["", "| ratio | median over median |", "| --- | ---: |"]
    lines += [f"| {name} | {value} |" for name, value in result["ratios"].items()]
    trees = [
        f"{name} {tree} ({found['commit'][:7]}; extraction/ + cache/ {found['stage_one_lines']:,} lines, "
        f"compiled: {', '.join(found['compiled_sources']) or 'none'})"
        for (name, tree), found in zip(result["trees"].items(), result["sources"].values())
    ]
    lines += ["", "Trees: " + ", ".join(trees)]
    lines += ["Setup (not measured): " + ", ".join(f"{k} {v} s" for k, v in result["setup_seconds"].items())]
    return "\n".join(lines + [f"- {note}" for note in result["notes"]])


@click.command()
@click.option("--rows", type=click.IntRange(10), default=200_000, show_default=True, help="Images in the cache.")
@click.option("--added", type=click.IntRange(1), default=1_000, show_default=True, help="New images of the add.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True, help="Runs of each, taking turns.")
@click.option(
    "--old",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("/tmp/oldcode"),
    show_default=True,
    help="The source tree to compare with (a checkout of another commit, its extension built in place).",
)
@click.option(
    "--new",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=ROOT,
    show_default=True,
    help="The source tree measured against it (default: this one).",
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to work in, on disk (default: the system's temporary folder); deleted at the end.",
)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write JSON here.")
def main(rows, added, repeats, old, new, work, json_out):
    """Time extract's rerun and add by two source trees against a bare walk of the same folder."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    parent = Path(work or tempfile.gettempdir()).resolve()
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="featcache-update-floor-", dir=parent))
    folder.rmdir()  # run() makes it and deletes it
    result = run(folder, rows, added, repeats, old.resolve(), new.resolve())
    if json_out:
        json_out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    click.echo(table(result))


if __name__ == "__main__":
    main()
