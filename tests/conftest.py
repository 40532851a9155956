"""Fixtures of the test suite; what they are made of lives in tests/support.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import support
from tests.support import REAL_DATA, REAL_WEIGHTS, FakeBackbone, make_split_dataset, require_real


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items) -> None:
    """Tests of the real weights and data are slow too (the clothing data is extracted once, minutes on a
    CPU): ``make test`` leaves them to ``make test-slow``, which CI runs as well."""
    for item in items:
        if item.get_closest_marker("real"):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item) -> None:
    support.RUNNING[0] = item


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
