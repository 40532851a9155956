"""store.py: extract from an S3-compatible server on loopback (moto's server mode, behind a proxy that can throttle,
refuse or lose reads) equals extract from the same files on disk, row for row, update by update."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from featcache.api import extract
from featcache.cache.layout import read_cache
from featcache.errors import DatasetError
from featcache.locations import data_location, shown_location
from tests.extraction.s3_server import MotoServer, Proxy, client, store_environment, upload
from tests.support import FakeBackbone, extract_command, kill_at, make_split_dataset, write_image

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = {"image_size": 71, "batch_size": 4}


@pytest.fixture(scope="module")
def store():
    """moto's S3 server on loopback and the proxy in front of it, for the module's tests."""
    server = MotoServer().start()
    proxy = Proxy(server.port).start()
    try:
        yield server, proxy
    finally:
        proxy.stop()
        server.stop()


@pytest.fixture
def s3(store, monkeypatch):
    """(moto's own endpoint, the proxy) with the standard AWS variables pointing featcache at the proxy."""
    server, proxy = store
    proxy.reset()
    for name, value in store_environment(proxy.endpoint).items():
        monkeypatch.setenv(name, value)
    return server.endpoint, proxy


def _data_with_flaws(root: Path) -> Path:
    """Split folders with a nested folder, a hidden file, a text file, a name with a space and an accent, a
    file that is no image, an empty one and a copy of another's bytes."""
    data = make_split_dataset(root, counts={"train": 8, "validation": 2, "test": 2})
    (data / "train" / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    (data / "train" / "dog" / "empty.png").write_bytes(b"")
    (data / "train" / "cat" / ".hidden.jpg").write_bytes(b"hidden")
    (data / "train" / "cat" / "notes.txt").write_text("not read")
    write_image(data / "train" / "cat" / "deeper" / "a.jpg", (180, 60, 60), seed=90)
    write_image(data / "train" / "dog" / "chien é 1.jpg", (60, 180, 60), seed=91)
    shutil.copy(data / "train" / "cat" / "cat_000.jpg", data / "test" / "dog" / "same_bytes_as_a_cat.jpg")
    return data


def _bucket() -> str:
    return f"photos-{uuid.uuid4().hex[:12]}"


def _assert_same_rows(got: Path, expected: Path) -> None:
    """Row for row the same cache, apart from the version column (an object's ETag stamp, a file's mtime)."""
    a, b = read_cache(got), read_cache(expected)
    for column in ("path", "sha256", "label", "split", "size"):
        assert list(getattr(a.rows, column)) == list(getattr(b.rows, column)), column
    assert a.class_names == b.class_names
    assert sorted(a.quarantine, key=str) == sorted(b.quarantine, key=str)
    np.testing.assert_allclose(a.features, b.features, atol=1e-6, rtol=0)


def test_extract_from_s3_equals_extract_from_disk_and_follows_every_change(tmp_path, s3):
    endpoint, proxy = s3
    data = _data_with_flaws(tmp_path / "data")
    url = upload(endpoint, data, _bucket(), "set/")
    disk, bucket = tmp_path / "disk.h5", tmp_path / "s3.h5"
    extract(data, disk, backbone=FakeBackbone(), **OPTIONS)
    first = extract(url, bucket, backbone=FakeBackbone(), **OPTIONS)
    _assert_same_rows(bucket, disk)
    assert {q.path for q in first.quarantine} == {"train/cat/broken.jpg", "train/dog/empty.png"}
    assert read_cache(bucket, with_vectors=False).attrs["data_dir"] == url

    reads = proxy.reads
    again = extract(url, bucket, backbone=FakeBackbone(), **OPTIONS)
    # listed, not read: only the two objects that are no image are read again, as their files are on disk
    assert (again.computed, proxy.reads - reads) == (0, 2)

    # an object added, one changed in place (same key, other bytes), one removed: on disk and in the store alike
    s3c, name = client(endpoint), url.split("/")[2]
    write_image(data / "train" / "dog" / "new.jpg", (10, 250, 10), seed=200)
    write_image(data / "train" / "cat" / "cat_001.jpg", (250, 10, 10), seed=201)
    (data / "train" / "dog" / "dog_002.png").unlink()
    for rel in ("train/dog/new.jpg", "train/cat/cat_001.jpg"):
        s3c.put_object(Bucket=name, Key=f"set/{rel}", Body=(data / rel).read_bytes())
    s3c.delete_object(Bucket=name, Key="set/train/dog/dog_002.png")
    extract(data, disk, backbone=FakeBackbone(), **OPTIONS)
    update = extract(url, bucket, backbone=FakeBackbone(), **OPTIONS)
    assert update.computed == 2
    _assert_same_rows(bucket, disk)
    assert "train/dog/dog_002.png" not in read_cache(bucket, with_vectors=False).rows.path


def test_objects_that_cannot_be_read_are_quarantine_rows_with_the_store_reason(tmp_path, s3):
    endpoint, proxy = s3
    data = make_split_dataset(tmp_path / "data")
    url = upload(endpoint, data, _bucket())
    proxy.forbidden, proxy.missing = {"train/cat/cat_001.jpg"}, {"train/dog/dog_000.jpg"}
    result = extract(url, tmp_path / "c.h5", backbone=FakeBackbone(), **OPTIONS)
    reasons = {q.path: q.reason for q in read_cache(tmp_path / "c.h5", with_vectors=False).quarantine}
    assert reasons == {
        "train/cat/cat_001.jpg": "cannot read object: Access Denied",
        "train/dog/dog_000.jpg": "cannot read object: The specified key does not exist.",
    }
    assert result.rows == 20 - 2
    proxy.reset()  # readable again: the next run reads them and keeps their rows
    assert extract(url, tmp_path / "c.h5", backbone=FakeBackbone(), **OPTIONS).rows == 20


@pytest.mark.slow  # make test stays under 5 minutes; CI runs it with make test-slow
def test_throttled_reads_are_retried_with_backoff(tmp_path, s3):
    endpoint, proxy = s3
    data = make_split_dataset(tmp_path / "data")
    url = upload(endpoint, data, _bucket())
    extract(data, tmp_path / "disk.h5", backbone=FakeBackbone(), **OPTIONS)
    proxy.throttle = 8  # the first 8 object reads answer 503 SlowDown
    extract(url, tmp_path / "s3.h5", backbone=FakeBackbone(), **OPTIONS)
    assert proxy.throttled == 8
    _assert_same_rows(tmp_path / "s3.h5", tmp_path / "disk.h5")


def test_an_object_throttled_past_every_retry_is_quarantined_then_read_by_the_next_run(tmp_path, s3, monkeypatch):
    endpoint, proxy = s3
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries off: only s3fs's SlowDown backoff
    url = upload(endpoint, make_split_dataset(tmp_path / "data"), _bucket())
    proxy.slow = {"train/cat/cat_002.png"}
    first = extract(url, tmp_path / "c.h5", backbone=FakeBackbone(), **OPTIONS)
    assert [(q.path, "SlowDown" in q.reason or "reduce your request rate" in q.reason) for q in first.quarantine] == [
        ("train/cat/cat_002.png", True)
    ]
    assert proxy.throttled >= 5, "s3fs tries a throttled read several times before giving up"
    proxy.reset()
    second = extract(url, tmp_path / "c.h5", backbone=FakeBackbone(), **OPTIONS)
    assert (second.computed, second.rows, second.quarantine) == (1, 20, [])


@pytest.mark.slow  # make test stays under 5 minutes; CI runs it with make test-slow
def test_credentials_appear_in_no_output_and_no_file_written(tmp_path, s3):
    endpoint, proxy = s3
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    url = upload(endpoint, make_split_dataset(tmp_path / "data"), _bucket())
    env = {**_plain_env(), **store_environment(proxy.endpoint, secret)}
    out = tmp_path / "out" / "c.h5"
    done = subprocess.run(
        [*extract_command(url, out)[:3], "-v", *extract_command(url, out)[3:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    bad = subprocess.run(
        extract_command("s3://no-such-bucket/x", tmp_path / "out" / "d.h5"),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "cannot list s3://no-such-bucket/x" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert written and any(p.suffix == ".h5" for p in written)
    for text in (done.stdout, done.stderr, bad.stdout, bad.stderr):
        assert secret not in text
    for path in written:
        assert secret.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_from_its_committed_shards(tmp_path, s3):
    endpoint, proxy = s3
    data = make_split_dataset(tmp_path / "data", counts={"train": 10, "validation": 3, "test": 3})
    url = upload(endpoint, data, _bucket())
    command = lambda out: extract_command(url, out, "--batch-size", "4", "--workers", "1", "--commit-seconds", "0")  # noqa: E731
    reference = tmp_path / "reference.h5"
    assert subprocess.run(command(reference), capture_output=True, timeout=300, cwd=ROOT).returncode == 0
    out = tmp_path / "resumed.h5"
    kill_at(command(out), "os.rename", r"\.shards/\.shard-[^/]*\.tmp$", nth=3)  # two shards committed, the third not
    done = subprocess.run(command(out), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "computed 24," in done.stdout, done.stdout  # 32 images, 8 in the two committed shards
    _assert_same_rows(out, reference)


def test_plain_featcache_never_imports_fsspec_for_a_local_folder(tmp_path):
    data = make_split_dataset(tmp_path / "data")
    code = (
        "import sys; from featcache.api import extract; import featcache.cli; from tests.support import FakeBackbone; "
        f"extract({str(data)!r}, {str(tmp_path / 'c.h5')!r}, backbone=FakeBackbone(), image_size=71); "
        "print(sorted(m for m in ('fsspec', 's3fs', 'botocore', 'aiobotocore') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_store_that_cannot_be_listed_is_one_error(tmp_path, s3):
    with pytest.raises(DatasetError, match=r"cannot list s3://no-such-bucket-here .*credentials"):
        extract("s3://no-such-bucket-here", tmp_path / "c.h5", backbone=FakeBackbone(), **OPTIONS)
    assert not (tmp_path / "c.h5").exists()


def test_augmented_views_are_made_from_the_objects(tmp_path, s3):
    endpoint, _ = s3
    data = make_split_dataset(tmp_path / "data")
    url = upload(endpoint, data, _bucket())
    disk = extract(data, tmp_path / "disk.h5", backbone=FakeBackbone(), augment=2, **OPTIONS)
    store = extract(url, tmp_path / "s3.h5", backbone=FakeBackbone(), augment=2, **OPTIONS)
    assert store.views.computed == disk.views.computed == 2 * 12 and store.views.failed == 0


def test_a_manifest_with_a_store_is_refused_with_one_line(tmp_path, s3):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\ntrain/cat/cat_000.jpg,cat\n")
    with pytest.raises(DatasetError, match="--manifest is read for local data folders only"):
        extract("s3://photos/set", tmp_path / "c.h5", backbone=FakeBackbone(), manifest=manifest, **OPTIONS)


@pytest.mark.parametrize(
    ("given", "held", "shown"),
    [
        ("s3://bucket/photos/", "s3://bucket/photos", "s3://bucket/photos"),
        ("gs://user:secret@bucket/p", "gs://user:secret@bucket/p", "gs://bucket/p"),
        ("file:///srv/photos", Path("/srv/photos"), "/srv/photos"),
        ("photos", Path("photos"), "photos"),
    ],
)
def test_a_data_folder_is_a_path_or_a_url(given, held, shown):
    assert data_location(given) == held
    assert shown_location(data_location(given)) == shown


def _plain_env() -> dict:
    import os

    keep = ("PATH", "HOME", "PYTHONPATH", "LANG", "TMPDIR", "FEATCACHE_WEIGHTS")
    return {k: os.environ[k] for k in keep if k in os.environ}
