"""Fixtures of the test suite; what they are made of lives in tests/support.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import support
from tests.support import REAL_DATA, REAL_WEIGHTS, FakeBackbone, make_split_dataset, require_real


def pytest_runtest_setup(item) -> None:
    support.RUNNING[0] = item


@pytest.fixture(params=["compiled", "python"])
def scan_way(request, monkeypatch) -> str:
    """Folders listed and files stat-ed by the compiled featcache.extraction._fsscan, then by plain Python."""
    from featcache.extraction import fsscan

    if request.param == "compiled" and fsscan.native is None:
        pytest.skip("featcache.extraction._fsscan is not built (test_fsscan fails where a C compiler is at hand)")
    if request.param == "python":
        monkeypatch.setattr(fsscan, "native", None)
    return request.param


@pytest.fixture
def python_scan(monkeypatch) -> None:
    """Without the compiled scan: files are stat-ed by helper processes past a threshold."""
    from featcache.extraction import fsscan

    monkeypatch.setattr(fsscan, "native", None)


@pytest.fixture
def split_data(tmp_path) -> Path:
    return make_split_dataset(tmp_path / "data")


@pytest.fixture
def fake_backbone() -> FakeBackbone:
    return FakeBackbone()


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    """The clothing dataset extracted once per test run with the real weights at 150 px."""
    require_real()
    from featcache.api import extract

    out = tmp_path_factory.mktemp("real") / "clothing.h5"
    extract(REAL_DATA, out, weights=str(REAL_WEIGHTS), image_size=150)
    return out


@pytest.fixture(scope="session")
def tiny_xception_cache(tmp_path_factory) -> Path:
    """A few synthetic images extracted with the real Xception graph, seeded random weights, at 71 px."""
    from featcache.api import extract

    root = tmp_path_factory.mktemp("tiny_xception")
    data = make_split_dataset(root / "data", counts={"train": 4, "validation": 2, "test": 1})
    out = root / "cache.h5"
    extract(data, out, weights="none", image_size=71, batch_size=8)
    return out
