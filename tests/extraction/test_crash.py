"""A real `featcache extract` process killed with SIGKILL at several moments resumes exactly, leaving no litter."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from featcache.cache.layout import read_cache, read_views, views_folder
from featcache.cache.shards import list_shards, shards_dir
from featcache.cache.summary import info
from tests.support import extract_command, kill_at, make_split_dataset, shards_in_use

BATCH = 4


def _command(data: Path, out: Path) -> list[str]:
    return extract_command(data, out, "--batch-size", str(BATCH), "--workers", "1", "--commit-seconds", "0")


def _run_to_end(data: Path, out: Path) -> int:
    """Run an extract to its end; returns how many vectors it computed (from its summary)."""
    done = subprocess.run(_command(data, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(re.search(r"computed (\d+), reused", done.stdout).group(1))


def temporaries(out: Path) -> list[Path]:
    """Every temporary file beside the cache and in its shards folder, whoever made it."""
    beside = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-")]
    folder = shards_dir(out)
    inside = [p for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.is_dir() else []
    return beside + inside


class Watched:
    """What the extract process ``pid`` has written so far; files of other processes never count.

    Committed shards are named by their content, so the process's own are those that were not
    there before it started; its temporary files carry its pid.
    """

    def __init__(self, out: Path):
        self.out, self.pid = out, None
        self.before = {p.name for p in list_shards(shards_dir(out))}

    def parts(self) -> int:
        return sum(p.name not in self.before for p in list_shards(shards_dir(self.out)))

    def part_in_flight(self) -> bool:
        folder = shards_dir(self.out)
        mine = f".shard-{self.pid}-"
        return folder.is_dir() and any(p.name.startswith(mine) and p.name.endswith(".tmp") for p in folder.iterdir())

    def final_file(self) -> Path:
        return self.out.with_name(f".{self.out.name}.tmp-{self.pid}")

    def moment(self) -> str:
        """The moment the process was in, read from the files it left."""
        if self.final_file().exists():
            return "writing the final file"
        if self.part_in_flight():
            return "committing a part"
        if self.parts() == 0:
            return "before the first part"
        return "computing"


def _kill_on(data: Path, out: Path, moment: tuple[str, str, int]) -> tuple[str, int]:
    """Run an extract and SIGKILL it at ``moment`` (event, path, nth: see tests.support.kill_at); (the
    moment its files show, rows committed)."""
    watched = Watched(out)
    watched.pid = kill_at(_command(data, out), *moment)
    return watched.moment(), _committed_rows(out)


def _committed_rows(out: Path) -> int:
    """Images whose vectors the cache or its committed shards hold: what a rerun must not compute."""
    known = set()
    for part in list_shards(shards_dir(out)):
        with h5py.File(part, "r") as h5:
            known.update(h5["sha256"].asstr()[:])
    if out.exists():
        known.update(read_cache(out, with_vectors=False).rows.sha256)
    return len(known)


def _assert_same_cache(got_path: Path, ref_path: Path) -> None:
    ref, got = read_cache(ref_path), read_cache(got_path)
    assert got.rows.path == ref.rows.path and got.rows.sha256 == ref.rows.sha256
    assert got.rows.label == ref.rows.label and got.rows.split == ref.rows.split
    np.testing.assert_allclose(got.features, ref.features, atol=1e-5)


#: the temporary file of a part (a shard of clean vectors; views go to ``<cache>.views/``)
PART = r"\.shards/\.shard-[^/]*\.tmp$"


def _after_parts(n: int) -> tuple[str, str, int]:
    """``n`` parts committed and the next one computed: as its temporary file is about to be created."""
    return "open", PART, n + 1


def _committing(n: int) -> tuple[str, str, int]:
    """Part ``n`` written to its temporary file, not yet renamed into place."""
    return "os.rename", PART, n


#: the entry file of the killed run (``resumed.h5``) written, not yet renamed into place
FINAL_FILE = ("os.rename", r"/\.resumed\.h5\.tmp-\d+$", 1)


@dataclass(frozen=True)
class Moment:
    aimed: str
    at: tuple[str, str, int]  # (audit event, path regex, nth) the process is stopped and killed at
    expect: str  # what the files must show at the kill
    committed: int  # images whose vectors are committed at the kill


KILL_POINTS = [
    Moment("while starting up", ("import", r"^tensorflow$", 1), "before the first part", 0),
    Moment("after the first part", _after_parts(1), "computing", BATCH),
    Moment("while committing the first part", _committing(1), "committing a part", 0),
    Moment("during decoding and forward passes", _after_parts(3), "computing", 3 * BATCH),
    Moment("while committing a part early", _committing(6), "committing a part", 5 * BATCH),
    Moment("mid-run", _after_parts(15), "computing", 15 * BATCH),
    Moment("while committing a part mid-run", _committing(26), "committing a part", 25 * BATCH),
    Moment("during decoding and forward passes late", _after_parts(35), "computing", 35 * BATCH),
    Moment("late in the run", _after_parts(50), "computing", 50 * BATCH),
    Moment("while committing one of the last parts", _committing(56), "committing a part", 55 * BATCH),
    Moment("while committing the last part", _committing(60), "committing a part", 59 * BATCH),
    Moment("as the final file is renamed into place", FINAL_FILE, "writing the final file", 240),
]


@pytest.mark.slow
@pytest.mark.parametrize("moment", KILL_POINTS, ids=[m.aimed for m in KILL_POINTS])
def test_sigkill_at_a_moment_then_rerun_reuses_committed_work_and_matches(tmp_path, crash_data, moment):
    data, reference, total = crash_data
    out = tmp_path / "resumed.h5"
    hit, committed = _kill_on(data, out, moment.at)
    assert (hit, committed) == (moment.expect, moment.committed), f"aimed {moment.aimed}"
    if hit == "writing the final file":
        assert temporaries(out), "the kill should leave the half-written cache behind"
    assert not out.exists() or info(out).rows == total  # readable whenever it exists
    computed = _run_to_end(data, out)
    assert temporaries(out) == [], "the rerun must sweep what the killed run left"
    assert computed == total - committed, f"committed {committed} before the kill, recomputed {computed}"
    _assert_same_cache(out, reference)
    assert shards_in_use(out)


@pytest.fixture(scope="module")
def crash_data(tmp_path_factory) -> tuple[Path, Path, int]:
    """240 images and their cache from an uninterrupted run."""
    root = tmp_path_factory.mktemp("crash")
    data = make_split_dataset(root / "data", counts={"train": 80, "validation": 20, "test": 20})
    reference = root / "reference.h5"
    assert _run_to_end(data, reference) == 240
    return data, reference, 240


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun_matches_an_uninterrupted_run(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 10, "validation": 3, "test": 3})
    reference = tmp_path / "reference.h5"
    _run_to_end(data, reference)
    out = tmp_path / "resumed.h5"
    for parts in (1, 2, 3):  # each run commits that many parts of what the runs before left
        assert _kill_on(data, out, _after_parts(parts))[0] == "computing"
        assert not out.exists() or info(out).rows == 32
    committed = _committed_rows(out)
    assert committed == (1 + 2 + 3) * BATCH and _run_to_end(data, out) == 32 - committed
    assert temporaries(out) == []
    _assert_same_cache(out, reference)
    assert shards_in_use(out)


@pytest.mark.slow
def test_sigkill_after_a_complete_cache_keeps_it_and_adds_new_images(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 4})
    out = tmp_path / "c.h5"
    _run_to_end(data, out)
    before = read_cache(out)
    make_split_dataset(data, counts={"test": 8}, start_seed=100)
    _, committed = _kill_on(data, out, _after_parts(2))
    assert read_cache(out).rows == before.rows  # the committed cache is untouched
    in_parts = committed - len(before.rows)
    assert in_parts == 2 * BATCH
    assert _run_to_end(data, out) == 16 - in_parts
    assert len(read_cache(out).rows) == 8 + 16


def _view_shards_of(out: Path, before: set[str]) -> int:
    return sum(p.name not in before for p in list_shards(views_folder(out)))


def _views_run(data: Path, out: Path) -> tuple[int, int]:
    """Run an extract with 3 views per train image to its end; (vectors, views) it computed."""
    done = subprocess.run(_command(data, out) + ["--augment", "3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    views = re.search(r"computed (\d+), [\d.]+ s\n", done.stdout + "\n")
    return int(re.search(r"computed (\d+), reused", done.stdout).group(1)), int(views.group(1))


@pytest.mark.slow
def test_sigkill_while_computing_views_then_rerun_reuses_committed_views_and_matches(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 8, "validation": 2, "test": 2})
    reference = tmp_path / "reference.h5"
    assert _views_run(data, reference) == (24, 48)
    out = tmp_path / "resumed.h5"
    kill_at(_command(data, out) + ["--augment", "3"], "open", r"\.views/\.shard-[^/]*\.tmp$", nth=4)
    assert _view_shards_of(out, set()) == 3
    with_views = set()
    for shard in list_shards(views_folder(out)):
        with h5py.File(shard, "r") as h5:
            with_views.update(h5["sha256"].asstr()[:])
    assert not out.exists(), "killed while computing views, before the entry file"
    computed, views = _views_run(data, out)
    assert computed == 0, "the clean vectors were all committed before the views began"
    assert views == 48 - len(with_views) and views < 48
    assert temporaries(out) == [] and not [p for p in views_folder(out).iterdir() if p.name.endswith(".tmp")]
    _assert_same_cache(out, reference)
    got, ref = read_views(out), read_views(reference)
    np.testing.assert_array_equal(got.row, ref.row)
    np.testing.assert_array_equal(got.view, ref.view)
    with h5py.File(out) as a, h5py.File(reference) as b:
        np.testing.assert_allclose(a["augmented/features"][:], b["augmented/features"][:], atol=1e-5)
