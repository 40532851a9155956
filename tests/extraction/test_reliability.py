"""Reliability: the bad-image zoo, a full disk, concurrent runs and readers, and what is never loaded."""

from __future__ import annotations

import ast
import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featcache.api import extract
from featcache.cache import layout, shards
from featcache.cache.layout import read_cache
from featcache.cache.shards import list_shards, shards_dir
from featcache.cache.summary import info
from featcache.errors import CacheError
from tests.support import FakeBackbone, extract_command, make_split_dataset, shards_in_use, write_image

#: the package, at the root of the repository
PACKAGE = Path(__file__).resolve().parents[2] / "featcache"


def _rgb(w=40, h=30, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _make_zoo(folder: Path) -> dict[str, str | None]:
    """Write the zoo; returns file name -> expected quarantine reason prefix (None: decoded)."""
    folder.mkdir(parents=True)
    expect: dict[str, str | None] = {}

    def save(name, image, reason=None, **kw):
        image.save(folder / name, **kw)
        expect[name] = reason

    (folder / "zero.jpg").write_bytes(b"")
    expect["zero.jpg"] = "empty file"
    _rgb(300, 300).save(folder / "full.jpg", quality=95)
    (folder / "truncated.jpg").write_bytes((folder / "full.jpg").read_bytes()[:2000])
    expect["full.jpg"], expect["truncated.jpg"] = None, "truncated image"
    (folder / "random.jpg").write_bytes(np.random.default_rng(1).bytes(5000))
    (folder / "text.png").write_text("definitely not a PNG\n")
    expect["random.jpg"] = expect["text.png"] = "not an image"
    save("jpeg_named.png", _rgb(seed=2), format="JPEG")
    save("png_named.jpg", _rgb(seed=3), format="PNG")
    save("rgba.png", _rgb(seed=4).convert("RGBA"))
    save("palette_transparent.png", _rgb(seed=5).convert("P"), transparency=0)
    save("gray.png", _rgb(seed=6).convert("L"))
    save("cmyk.jpg", _rgb(seed=7).convert("CMYK"), format="JPEG")
    save("deep16.png", Image.fromarray((np.arange(1200).reshape(30, 40) * 40).astype(np.uint16)))
    save("one_pixel.png", Image.new("RGB", (1, 1), (9, 9, 9)))
    save("bomb.png", Image.new("1", (30000, 30000)), "decompression bomb")
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 8
    save("exif_rotated.jpg", _rgb(seed=8), exif=exif)
    save("image.webp", _rgb(seed=9), format="WEBP")
    save("image.tiff", _rgb(seed=10), format="TIFF")
    save("image.bmp", _rgb(seed=11), format="BMP")
    save("name with spaces é 中文.jpg", _rgb(seed=12))
    os.symlink(folder / "loop_b.jpg", folder / "loop_a.jpg")
    os.symlink(folder / "loop_a.jpg", folder / "loop_b.jpg")
    os.symlink(folder / "missing.jpg", folder / "broken.jpg")
    expect["loop_a.jpg"] = expect["loop_b.jpg"] = expect["broken.jpg"] = "broken symlink or symlink loop"
    (folder / "x.jpg").mkdir()
    expect["x.jpg"] = "a folder, not a file"
    return expect


def test_bad_image_zoo_is_decoded_or_quarantined_with_a_reason(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 2})
    expect = _make_zoo(data / "train" / "cat" / "zoo")
    started = time.monotonic()
    result = extract(data, tmp_path / "c.h5", backbone=FakeBackbone(), image_size=71)
    assert time.monotonic() - started < 60  # nothing hangs
    reasons = {q.path.rsplit("/", 1)[-1]: q.reason for q in result.quarantine}
    cache = read_cache(tmp_path / "c.h5")
    kept = {p.rsplit("/", 1)[-1] for p in cache.rows.path}
    for name, reason in expect.items():
        if reason is None:
            assert name in kept, f"{name} should decode, quarantined as {reasons.get(name)}"
        else:
            assert reasons.get(name, "").startswith(reason), f"{name}: {reasons.get(name)}"
    assert {f"cat_{i:03d}.jpg" for i in range(2)} <= kept and len(cache.rows) == 4 + sum(
        r is None for r in expect.values()
    )
    assert np.isfinite(cache.features).all()


class _Disk:
    """A small disk for the full-disk test: a tmpfs where mounting is allowed, else ENOSPC injected.

    Injection sends featcache's own writes through a byte budget: committing a part fails with
    ENOSPC once the folder holds ``size`` bytes, and the free space reported to featcache shrinks
    alike, so the same recovery path runs as on a real full disk.
    """

    def __init__(self, path: Path, size: int, monkeypatch, inject: bool):
        self.path, self.size = path, size
        path.mkdir()
        mounted = not inject and _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
        self.kind = "tmpfs" if mounted else "injected"
        if not mounted:
            self._inject(monkeypatch)

    def _used(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def _inject(self, monkeypatch) -> None:
        write = shards.write_file

        def write_within_budget(path: Path, data: bytes) -> None:
            if self._used() + len(data) > self.size:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            write(path, data)

        def usage(path):
            used = self._used()
            return shutil._ntuple_diskusage(self.size, used, max(self.size - used, 0))

        monkeypatch.setattr(shards, "write_file", write_within_budget)  # what ShardWriter writes shards with
        monkeypatch.setattr(layout.shutil, "disk_usage", usage)  # what the cache file write checks

    def grow(self, size: int) -> None:
        self.size = size
        if self.kind == "tmpfs":
            assert _mount(["-o", f"remount,size={size}", str(self.path)])

    def close(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["umount", str(self.path)], check=False)


def _mount(args: list[str]) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


class _WideBackbone(FakeBackbone):
    """2048 floats per image, like Xception, so a small disk fills up."""

    dim = 2048

    def build(self):
        from tests.support import fake_embed

        return lambda batch: np.tile(fake_embed(batch), (1, 128))


@pytest.mark.parametrize("inject", [False, True], ids=["tmpfs-or-injected", "injected"])
def test_full_disk_stops_with_a_clear_error_and_resumes_with_space(tmp_path, monkeypatch, inject):
    disk = _Disk(tmp_path / "disk", 1 << 20, monkeypatch, inject)
    try:
        data = make_split_dataset(tmp_path / "data", counts={"train": 3})
        out = disk.path / "c.h5"
        extract(data, out, backbone=_WideBackbone(), image_size=71)
        before = out.read_bytes()
        make_split_dataset(data, counts={"test": 60}, start_seed=50)
        with pytest.raises(CacheError, match="no space left on the device .* rerun the same command"):
            extract(data, out, backbone=_WideBackbone(), image_size=71, batch_size=8, commit_seconds=0)
        assert out.read_bytes() == before and len(read_cache(out).rows) == 6
        committed = len(list_shards(shards_dir(out))) - len(read_cache(out, with_vectors=False).locations.files)
        assert committed > 0
        disk.grow(8 << 20)
        result = extract(data, out, backbone=_WideBackbone(), image_size=71, batch_size=8)
        assert result.rows == 126 and result.reused >= 6 + committed * 8
        assert shards_in_use(out)
    finally:
        disk.close()


def _slow_extract(data: Path, out: Path) -> subprocess.Popen:
    cmd = extract_command(data, out, "--batch-size", "2", "--workers", "1", "--commit-seconds", "0")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_new_shard(proc, out: Path, before: set[str]) -> None:
    deadline = time.monotonic() + 120
    while not {s.name for s in list_shards(shards_dir(out))} - before:
        assert proc.poll() is None and time.monotonic() < deadline, "extract ended before committing a shard"
        time.sleep(0.01)


@pytest.mark.slow
def test_second_writer_refused_reader_sees_committed_state_and_killed_lock_is_cleared(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 2})
    out = tmp_path / "c.h5"
    extract(data, out, weights="none", image_size=71)
    committed = info(out).rows
    make_split_dataset(data, counts={"test": 40}, start_seed=500)
    before = {s.name for s in list_shards(shards_dir(out))}
    first = _slow_extract(data, out)
    try:
        _wait_for_new_shard(first, out, before)
        started = time.monotonic()
        second = subprocess.run(extract_command(data, out), capture_output=True, text=True)
        assert second.returncode == 1 and "is being written by featcache process" in second.stderr
        assert "Traceback" not in second.stderr and time.monotonic() - started < 30
        assert info(out).rows == committed  # readers see the last complete cache
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        again = _slow_extract(data, out)  # the dead holder's lock does not block
        _, err = again.communicate(timeout=300)
        assert again.returncode == 0, err[-2000:]
        assert info(out).rows == committed + 80
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


#: modules that read or write pickles, by their top-level name
PICKLERS = {"pickle", "cPickle", "_pickle", "joblib", "dill", "cloudpickle", "shelve"}


def pickle_uses(root: Path) -> tuple[int, list[str]]:
    """Every ``.py`` file under ``root``, at any depth, parsed: (files scanned, ``"file:line: what"`` of each
    import of a pickle module, call of one, ``allow_pickle`` other than False and Keras ``load_model``
    without ``safe_mode=True``)."""
    files, found = sorted(root.rglob("*.py")), []
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            where = f"{file.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [f"{where}: imports {n}" for n in names if n.split(".")[0] in PICKLERS]
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in PICKLERS:
                found.append(f"{where}: calls {func.value.id}.{func.attr}")
            flags = {k.arg: k.value for k in node.keywords}
            if "allow_pickle" in flags and not _is_constant(flags["allow_pickle"], False):
                found.append(f"{where}: allow_pickle is not False")
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "load_model" and not _is_constant(flags.get("safe_mode"), True):
                found.append(f"{where}: load_model without safe_mode=True")
    return len(files), found


def _is_constant(node: ast.AST | None, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def test_nothing_featcache_saves_or_loads_is_a_pickle():
    scanned, found = pickle_uses(PACKAGE)
    assert found == []
    assert scanned >= 40, f"only {scanned} files scanned under {PACKAGE}"
    loaders = ("training/head_files.py", "training/baseline.py", "serving/exporter.py", "cache/layout.py")
    assert all((PACKAGE / name).is_file() for name in loaders)  # files that load models and arrays are scanned


@pytest.mark.parametrize(
    "line",
    [
        "import pickle",
        "from joblib import load",
        "rows = pickle.load(fh)",
        "arrays = np.load(path, allow_pickle=True)",
        "model = keras.saving.load_model(path, safe_mode=False)",
        "model = keras.saving.load_model(path)",
    ],
)
def test_the_pickle_scan_finds_a_use_planted_deep_in_a_package(tmp_path, line):
    root = tmp_path / "pkg"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "clean.py").write_text("arrays = np.load(path, allow_pickle=False)\nm = load_model(p, safe_mode=True)\n")
    (root / "sub" / "deeper" / "planted.py").write_text(f'"""A module."""\n\n{line}\n')
    scanned, found = pickle_uses(root)
    assert scanned == 2 and len(found) == 1 and found[0].startswith("sub/deeper/planted.py:3: "), found


def test_cache_files_contain_no_pickled_objects(split_data, tmp_path):
    import h5py

    out = tmp_path / "c.h5"
    extract(split_data, out, backbone=FakeBackbone(), image_size=71)
    with h5py.File(out, "r") as h5:
        kinds = []
        h5.visititems(lambda name, obj: kinds.append(obj.dtype.kind) if isinstance(obj, h5py.Dataset) else None)
    assert set(kinds) <= {"f", "i", "O", "S"}  # numbers and strings only


def test_outside_paths_only_with_allow_outside(tmp_path):
    outside = write_image(tmp_path / "elsewhere" / "far.jpg", (200, 30, 30), 3)
    data = make_split_dataset(tmp_path / "data", counts={"train": 2})
    os.symlink(outside, data / "train" / "cat" / "link.jpg")
    fenced = extract(data, tmp_path / "a.h5", backbone=FakeBackbone(), image_size=71)
    assert [q.reason for q in fenced.quarantine] == ["symlink points outside the data folder"]
    opened = extract(data, tmp_path / "b.h5", backbone=FakeBackbone(), image_size=71, allow_outside=True)
    assert opened.quarantine == [] and opened.rows == 5
