"""A real `featcache extract` process killed with SIGKILL at several moments resumes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featcache import store
from featcache.inspector import info
from tests.conftest import make_split_dataset

BATCH = 4


def _command(data: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "featcache",
        "extract",
        str(data),
        "-o",
        str(out),
        "--weights",
        "none",
        "--image-size",
        "71",
        "--batch-size",
        str(BATCH),
        "--workers",
        "1",
        "-q",
    ]


def _run_to_end(data: Path, out: Path) -> str:
    done = subprocess.run(_command(data, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _kill_when(data: Path, out: Path, parts_at_least: int) -> bool:
    """Start an extract and SIGKILL it once ``parts_at_least`` parts are committed; False if it ended first."""
    proc = subprocess.Popen(_command(data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = store.parts_dir(out)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if len(store.list_parts(parts)) >= parts_at_least:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_readable_or_absent(out: Path) -> None:
    if out.exists():
        assert info(out).rows > 0


def test_sigkill_at_several_points_then_rerun_matches_an_uninterrupted_run(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 10, "validation": 3, "test": 3})
    total_parts = (2 * 16 + BATCH - 1) // BATCH
    reference = tmp_path / "reference.h5"
    _run_to_end(data, reference)
    out = tmp_path / "resumed.h5"
    kills = 0
    for parts in (1, total_parts // 2, total_parts):  # early, mid-run, during finalisation
        kills += _kill_when(data, out, parts)
        _assert_readable_or_absent(out)
    assert kills >= 2, "the extract finished before it could be killed"
    summary = _run_to_end(data, out)
    assert "computed" in summary
    ref, got = store.read_cache(reference), store.read_cache(out)
    assert got.rows.path == ref.rows.path and got.rows.sha256 == ref.rows.sha256
    assert got.rows.label == ref.rows.label and got.rows.split == ref.rows.split
    np.testing.assert_allclose(got.features, ref.features, atol=1e-5)
    assert not store.parts_dir(out).exists()


def test_sigkill_after_a_complete_cache_keeps_it_and_adds_new_images(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 4})
    out = tmp_path / "c.h5"
    _run_to_end(data, out)
    before = store.read_cache(out)
    make_split_dataset(data, counts={"test": 8}, start_seed=100)
    if not _kill_when(data, out, 2):
        pytest.skip("the extract finished before it could be killed")
    assert store.read_cache(out).rows == before.rows  # the committed cache is untouched
    _run_to_end(data, out)
    assert len(store.read_cache(out).rows) == 8 + 16


def _tmp_part(out: Path) -> bool:
    parts = store.parts_dir(out)
    return parts.is_dir() and any(p.name.endswith(".tmp") for p in parts.iterdir())


def _tmp_cache(out: Path) -> bool:
    return any(p.name.startswith(f".{out.name}.tmp-") for p in out.parent.iterdir())


def _kill_on(data: Path, out: Path, predicate) -> bool:
    """Run an extract and SIGKILL it the moment ``predicate(out, parts_at_start, seconds)`` holds."""
    at_start = len(store.list_parts(store.parts_dir(out)))
    proc = subprocess.Popen(_command(data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - started < 300:
            if predicate(out, at_start, time.monotonic() - started):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.0005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _new_parts(n):
    return lambda out, at_start, _: len(store.list_parts(store.parts_dir(out))) >= at_start + n


KILL_POINTS = [
    ("while starting up", lambda out, at_start, seconds: seconds > 0.5),
    ("after the first batch", _new_parts(1)),
    ("while committing a part", lambda out, *_: _tmp_part(out)),
    ("during decoding and forward passes", _new_parts(3)),
    ("while committing a part", lambda out, *_: _tmp_part(out)),
    ("mid-run", _new_parts(5)),
    ("while committing a part", lambda out, *_: _tmp_part(out)),
    ("during decoding and forward passes", _new_parts(2)),
    ("late in the run", _new_parts(6)),
    ("while committing a part", lambda out, *_: _tmp_part(out)),
    ("during finalisation", lambda out, *_: _tmp_cache(out)),
    ("during finalisation", lambda out, *_: _tmp_cache(out)),
]


@pytest.mark.slow
def test_sigkill_at_ten_moments_on_a_few_hundred_images(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 80, "validation": 20, "test": 20})
    reference = tmp_path / "reference.h5"
    _run_to_end(data, reference)
    out = tmp_path / "resumed.h5"
    killed = []
    for moment, predicate in KILL_POINTS:
        if _kill_on(data, out, predicate):
            killed.append(moment)
        _assert_readable_or_absent(out)
    assert len(killed) >= 10, killed
    _run_to_end(data, out)
    ref, got = store.read_cache(reference), store.read_cache(out)
    assert len(got.rows) == 240
    assert got.rows.path == ref.rows.path and got.rows.sha256 == ref.rows.sha256
    np.testing.assert_allclose(got.features, ref.features, atol=1e-5)
