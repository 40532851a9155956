"""Every command answers bad input with one line that says what to do, exit 1, no traceback, no output left."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from featcache.api import extract, train_head
from featcache.cli import main
from tests.support import FakeBackbone, make_split_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A cache, a head trained on it, caches with other classes and settings, and broken files."""
    root = tmp_path_factory.mktemp("bad")
    data = make_split_dataset(root / "data", counts={"train": 4, "validation": 2})
    other_data = make_split_dataset(root / "other", counts={"train": 4, "validation": 2}, classes=("cat", "fox"))
    extract(data, root / "c.h5", backbone=FakeBackbone(), image_size=71)
    extract(other_data, root / "classes.h5", backbone=FakeBackbone(), image_size=71)
    extract(data, root / "settings.h5", backbone=FakeBackbone(), image_size=80)
    train_head(root / "c.h5", root / "head", epochs=1)
    (root / "truncated.h5").write_bytes((root / "c.h5").read_bytes()[:4096])
    with h5py.File(root / "foreign.h5", "w") as h5:
        h5["data"] = [1.0, 2.0]
    (root / "empty").mkdir()
    (root / "noclasses").mkdir()
    (root / "noclasses" / "a.jpg").write_bytes(b"")
    (root / "a_file").write_text("not a folder")
    (root / "one").mkdir()
    make_split_dataset(root / "one", counts={"train": 2}, classes=("cat",))
    return {"root": root, "data": data}


def _cases():
    missing, trunc, foreign = "{root}/missing.h5", "{root}/truncated.h5", "{root}/foreign.h5"
    return [
        # extract
        (["extract", "{root}/nope", "-o", "{root}/o.h5"], "does not exist"),
        (["extract", "{root}/empty", "-o", "{root}/o.h5"], "no class folders"),
        (["extract", "{root}/noclasses", "-o", "{root}/o.h5"], "no class folders"),
        (["extract", "{root}/one", "-o", "{root}/o.h5", "--weights", "none"], "at least two class"),
        (["extract", "{data}", "-o", "{root}/o.h5", "--image-size", "64"], ">= 71"),
        (["extract", "{data}", "-o", "{root}/o.h5", "--batch-size", "0"], ">= 1"),
        (["extract", "{data}", "-o", "{root}/a_file/o.h5", "--weights", "none"], "choose another -o"),
        # info
        (["info", missing], "featcache extract"),
        (["info", trunc], "--overwrite"),
        (["info", foreign], "not a featcache feature cache"),
        # train-head
        (["train-head", missing, "--out", "{root}/o"], "featcache extract"),
        (["train-head", trunc, "--out", "{root}/o"], "--overwrite"),
        (["train-head", foreign, "--out", "{root}/o"], "not a featcache feature cache"),
        (["train-head", "{root}/c.h5", "--out", "{root}/o", "--epochs", "-1"], "epochs"),
        (["train-head", "{root}/c.h5", "--out", "{root}/o", "--lr", "0"], "lr"),
        (["train-head", "{root}/c.h5", "--out", "{root}/o", "--batch-size", "0"], "batch_size"),
        (["train-head", "{root}/c.h5", "--out", "{root}/a_file"], "choose another --out"),
        # compare
        (["compare", missing, "--out", "{root}/o"], "featcache extract"),
        (["compare", foreign, "--out", "{root}/o"], "not a featcache feature cache"),
        (["compare", "{root}/c.h5", "--out", "{root}/o", "--head", "{root}/nohead"], "train-head"),
        (["compare", "{root}/classes.h5", "--out", "{root}/o", "--head", "{root}/head"], "featcache train-head"),
        (["compare", "{root}/settings.h5", "--out", "{root}/o", "--head", "{root}/head"], "fingerprint"),
        (["compare", "{root}/c.h5", "--out", "{root}/o", "--epochs", "0"], "epochs"),
        # predict
        (["predict", "{data}", "--head", "{root}/nohead"], "train-head"),
        (["predict", "{data}", "--head", "{root}/head", "--top-k", "0"], "top_k"),
        (["predict", "{data}", "--head", "{root}/head", "--batch-size", "0"], "batch_size"),
        # export
        (["export", "--head", "{root}/nohead", "--out", "{root}/m.keras"], "train-head"),
        (["export", "--head", "{root}/head", "--out", "{root}/a_file/m.keras"], "--out"),
        # verify
        (["verify", missing], "featcache extract"),
        (["verify", trunc], "--overwrite"),
        (["verify", foreign], "not a featcache feature cache"),
        (["verify", "{root}/c.h5", "--sample", "0"], "sample"),
    ]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("args,fragment", _cases(), ids=lambda v: " ".join(v[:1]) if isinstance(v, list) else v)
def test_bad_input_is_one_line_exit_1_and_leaves_nothing(world, args, fragment, monkeypatch):
    root = world["root"]
    monkeypatch.chdir(root)  # commands that fall back to default outputs (cache/...) would write here
    before = _snapshot(root)
    args = [a.format(root=root, data=world["data"]) for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # an uncaught error would be kept here
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert _snapshot(root) == before  # nothing new, nothing changed: no partial output
