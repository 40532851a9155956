"""File and folder names of every kind a file system allows, through extract (walked and by manifest), info,
train-head and compare: each file is a row or a quarantine entry with a reason, and every command succeeds."""

from __future__ import annotations

import csv
import json
import os
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featcache.api import extract
from featcache.cache.layout import read_cache
from featcache.cli import main
from tests.support import CLASS_COLOURS, FakeBackbone, write_image

#: pieces of names that have broken tools before: not UTF-8, line breaks, CSV and shell specials, markup
HOSTILE = [b"\xff\xfe", b"\x80", b"\n", b"\r", b'"', b"'", b",", b"#", b"-", b"--x", b" ", b"<", b">", b"&",
           b"&amp;", b"<script>", b"<!--", b"]]>", b"\\", b";", b"$(x)", b"%s", b"\t", b"*?", b"\xe2\x80\xae",
           "é".encode(), unicodedata.normalize("NFD", "é").encode(), "中文".encode(), b".hidden-not-first"]  # fmt: skip
SUFFIXES = [b".jpg", b".png", b".JPG"]
NAME_MAX = 255  # bytes, on Linux file systems


def _name(pieces: list[bytes], suffix: bytes, pad: bool) -> bytes:
    stem = b"".join(pieces) or b"x"
    if stem.startswith(b"."):
        stem = b"_" + stem  # a hidden file is not an image to read
    if pad:
        stem = stem + b"y" * (NAME_MAX - len(stem) - len(suffix))
    return (stem + suffix)[-NAME_MAX:] if len(stem + suffix) > NAME_MAX else stem + suffix


names = st.builds(
    _name, st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=4), st.sampled_from(SUFFIXES), st.booleans()
)
folder_names = st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=3).map(
    lambda pieces: (b"_" + b"".join(pieces))[:NAME_MAX]
)


def _layout(root: Path, files: list[bytes], cat: bytes, sub: bytes) -> dict[str, str]:
    """train/validation/test of two classes (``cat`` a hostile class folder name holding a hostile sub-folder),
    each file of ``files`` in every class folder; relpath -> class name."""
    expected, seed = {}, 0
    for split in ("train", "validation", "test"):
        for label, folder in ((cat, cat), (b"dog", b"dog")):
            for name in files + [b"plain.jpg"]:
                for where in (b"", sub + b"/") if split == "train" else (b"",):
                    seed += 1
                    rel = split.encode() + b"/" + folder + b"/" + where + name
                    path = Path(os.fsdecode(os.fsencode(root) + b"/" + rel))
                    colour = CLASS_COLOURS["cat" if label == cat else "dog"]
                    write_image(path, colour, seed, fmt="PNG" if name.lower().endswith(b".png") else "JPEG")
                    expected[os.fsdecode(rel)] = os.fsdecode(label)
    return expected


def _manifest(path: Path, expected: dict[str, str]) -> Path:
    # written as a user's script would, names that are not UTF-8 kept as the file system's bytes
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        writer.writerows([rel, label, rel.split("/")[0]] for rel, label in expected.items())
    return path


def _assert_cache_holds(cache: Path, root: Path, expected: dict[str, str]) -> None:
    read = read_cache(cache, with_vectors=False)
    rows = {path: read.class_names[label] for path, label in zip(read.rows.path, list(read.rows.label))}
    assert read.quarantine == []
    assert rows == expected
    for path in rows:  # a stored path names the file it came from
        assert (root / path).is_file(), path


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(names, min_size=1, max_size=4, unique=True), cat=folder_names, sub=folder_names)
def test_any_name_round_trips_through_extract_and_info(tmp_path_factory, files, cat, sub):
    root = tmp_path_factory.mktemp("names")
    data = root / "data"
    expected = _layout(data, files, cat, sub)
    walked = extract(data, root / "walked.h5", backbone=FakeBackbone())
    assert walked.computed == len(expected)
    _assert_cache_holds(root / "walked.h5", data, expected)
    again = extract(data, root / "walked.h5", backbone=FakeBackbone())
    assert again.computed == 0 and again.reused == len(expected)
    listed = extract(data, root / "listed.h5", backbone=FakeBackbone(), manifest=_manifest(root / "m.csv", expected))
    assert listed.computed == len(expected)
    _assert_cache_holds(root / "listed.h5", data, {rel: label.strip() for rel, label in expected.items()})
    for cache in ("walked.h5", "listed.h5"):
        shown = CliRunner().invoke(main, ["info", str(root / cache)])
        assert shown.exit_code == 0 and "Traceback" not in shown.output, shown.output
        assert json.loads(CliRunner().invoke(main, ["info", str(root / cache), "--json"]).output)["rows"] == len(
            expected
        )


@pytest.fixture(scope="module")
def hostile_cache(tmp_path_factory):
    """A cache of every hostile piece at once: a class folder, a sub-folder and file names."""
    root = tmp_path_factory.mktemp("hostile")
    files = [_name([piece], SUFFIXES[i % 3], pad=i == 0) for i, piece in enumerate(HOSTILE)]
    expected = _layout(root / "data", files, b"x<&\"'\n" + HOSTILE[0], b"-" + HOSTILE[0] + b"<b>")
    extract(root / "data", root / "c.h5", backbone=FakeBackbone())
    return root, expected


def test_train_head_and_compare_succeed_on_hostile_names(hostile_cache):
    root, expected = hostile_cache
    _assert_cache_holds(root / "c.h5", root / "data", expected)
    head = CliRunner().invoke(main, ["train-head", str(root / "c.h5"), "--out", str(root / "head"), "--epochs", "2"])
    assert head.exit_code == 0, head.output
    compared = CliRunner().invoke(
        main, ["compare", str(root / "c.h5"), "--head", str(root / "head"), "--out", str(root / "cmp")]
    )
    assert compared.exit_code == 0, compared.output
    report = json.loads((root / "cmp" / "report.json").read_text())
    assert sorted(report["class_names"]) == sorted(set(expected.values()))
    assert (root / "cmp" / "report.html").is_file()
