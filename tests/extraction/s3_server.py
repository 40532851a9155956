"""An S3-compatible server on loopback for the tests: moto's server mode, and a proxy in front of it that can
throttle (503 SlowDown), refuse (403 AccessDenied) or lose (404 NoSuchKey) object reads, as a real store does
under load, by policy, or when an object is deleted between the listing and the read."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
NO_SUCH_KEY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code>'
    b"<Message>The specified key does not exist.</Message></Error>"
)
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``moto_server`` on 127.0.0.1, started and stopped (by its pid) here."""

    def __init__(self):
        self.port, self.process = free_port(), None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class Proxy:
    """A loopback HTTP proxy to ``upstream`` that answers 503 SlowDown to the first ``throttle`` object reads (to
    every read of the keys named in ``slow``), 403 AccessDenied to reads of ``forbidden`` and 404 NoSuchKey to
    reads of ``missing``; it counts what it did."""

    def __init__(self, upstream_port: int):
        self.upstream_port, self.throttle = upstream_port, 0
        self.forbidden, self.missing, self.slow = set(), set(), set()
        self.throttled, self.refused, self.reads = 0, 0, 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                proxy._handle(self)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        self.throttle, self.throttled, self.refused, self.reads = 0, 0, 0, 0
        self.forbidden, self.missing, self.slow = set(), set(), set()

    def start(self) -> Proxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _verdict(self, method: str, path: str) -> bytes | None:
        """What to answer instead of the store for this request, or None to pass it on."""
        key = path.split("?", 1)[0]
        if method != "GET" or key.count("/") < 2 or key.endswith("/"):  # not an object read (a listing)
            return None
        with self._lock:
            self.reads += 1
            if any(key.endswith("/" + name) for name in self.forbidden):
                self.refused += 1
                return ACCESS_DENIED
            if any(key.endswith("/" + name) for name in self.missing):
                return NO_SUCH_KEY
            if self.throttled < self.throttle or any(key.endswith("/" + name) for name in self.slow):
                self.throttled += 1
                return SLOW_DOWN
        return None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        verdict = self._verdict(request.command, request.path)
        if verdict is not None:
            request.send_response({SLOW_DOWN: 503, ACCESS_DENIED: 403, NO_SUCH_KEY: 404}[verdict])
            request.send_header("Content-Type", "application/xml")
            request.send_header("Content-Length", str(len(verdict)))
            request.end_headers()
            request.wfile.write(verdict)
            return
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            upstream.request(request.command, request.path, body=body, headers=dict(request.headers))
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        request.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)


def store_environment(endpoint: str, secret: str = "moto-secret") -> dict[str, str]:
    """The standard AWS variables that point boto3, s3fs and featcache at ``endpoint``."""
    return {
        "AWS_ACCESS_KEY_ID": "featcache-test",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="featcache-test",
        aws_secret_access_key="moto-secret",
        region_name="us-east-1",
    )


def upload(endpoint: str, folder: Path, bucket: str, prefix: str = "") -> str:
    """Every file under ``folder`` as an object of a new ``bucket`` (under ``prefix``); the data's URL."""
    s3 = client(endpoint)
    s3.create_bucket(Bucket=bucket)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = prefix + path.relative_to(folder).as_posix()
            s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return f"s3://{bucket}/{prefix}".rstrip("/")
