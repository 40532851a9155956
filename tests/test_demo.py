"""The demo's images: downloaded once from a loopback server into Keras' cache, or a one-line error."""

from __future__ import annotations

import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from featcache.demo import DATA_ENV, URL_ENV, data_dir
from featcache.errors import DatasetError
from tests.support import make_split_dataset

SPLITS = {"train": 2, "validation": 1, "test": 1}


class _Archive(http.server.BaseHTTPRequestHandler):
    """Serves the server's ``archive`` bytes at /master.zip and counts the requests."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.split("?")[0] != "/master.zip":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.archive)))
        self.end_headers()
        self.wfile.write(self.server.archive)

    def log_message(self, *args):
        pass


def _zip_of(folder: Path) -> bytes:
    """A zip with ``folder`` as its one top folder, as GitHub's archive of a repository."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder.parent))
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server of a small clothing-dataset-small-master.zip: train/validation/test of cat, dog."""
    make_split_dataset(tmp_path / "repo" / "clothing-dataset-small-master", counts=SPLITS)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Archive)
    httpd.archive = _zip_of(tmp_path / "repo" / "clothing-dataset-small-master")
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd):
    return f"http://127.0.0.1:{httpd.server_address[1]}/master.zip"


def _closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/master.zip"


def test_downloads_the_archive_once_and_finds_train(server, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv(URL_ENV, _url(server))
    folder = data_dir(cache_dir=tmp_path / "keras")
    assert folder.name == "clothing-dataset-small-master"
    assert folder.is_relative_to(tmp_path / "keras" / "datasets")
    for split, n in SPLITS.items():
        for label in ("cat", "dog"):
            assert len(list((folder / split / label).iterdir())) == n
    assert data_dir(cache_dir=tmp_path / "keras") == folder
    assert server.requests == ["/master.zip"]


def test_another_address_is_another_download(server, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv(URL_ENV, _url(server))
    first = data_dir(cache_dir=tmp_path / "keras")
    monkeypatch.setenv(URL_ENV, _url(server) + "?again")
    assert data_dir(cache_dir=tmp_path / "keras") != first
    assert len(server.requests) == 2


def test_featcache_data_is_used_as_given(server, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv(URL_ENV, _url(server))
    assert data_dir(cache_dir=tmp_path / "keras") == tmp_path / "mine"
    assert server.requests == []


def test_an_archive_without_train_is_refused(server, tmp_path, monkeypatch):
    (tmp_path / "other" / "readme").mkdir(parents=True)
    server.archive = _zip_of(tmp_path / "other")
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv(URL_ENV, _url(server))
    with pytest.raises(DatasetError, match="has no train/ folder.*_archive to download it again.*FEATCACHE_DATA"):
        data_dir(cache_dir=tmp_path / "keras")


def _demo_data(tmp_path, url):
    """``featcache demo-data`` in its own process, so that KERAS_HOME decides Keras' cache folder."""
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV} | {"KERAS_HOME": str(tmp_path / "keras"), URL_ENV: url}
    command = [sys.executable, "-m", "featcache", "demo-data"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_the_command_prints_only_the_folder_in_keras_home(server, tmp_path):
    done = _demo_data(tmp_path, _url(server))
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert done.stdout == f"{folder}\n"
    assert folder.name == "clothing-dataset-small-master"
    assert folder.is_relative_to(tmp_path / "keras" / "datasets")
    assert sorted(p.name for p in folder.iterdir()) == ["test", "train", "validation"]
    assert server.requests == ["/master.zip"]


def test_an_unreachable_address_is_a_one_line_error(tmp_path):
    url = _closed_port_url()
    done = _demo_data(tmp_path, url)
    assert done.returncode == 1 and done.stdout == ""
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"Error: could not download the clothing data from {url} (")
    assert "Connection refused" in error
    assert error.endswith(
        "set FEATCACHE_DATA to a folder of train/validation/test class folders, "
        "or FEATCACHE_DEMO_URL to a reachable archive"
    )
