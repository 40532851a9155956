"""Where stage one reads images from: a local folder (``os``), or an object store named by an fsspec URL.

:func:`open_source` gives either; both read one image for
:func:`featcache.extraction.pipeline.prepare_one` and the augmented views, so both engines read
through the same two methods. An object store is also listed here (one ``find`` with details); a
local folder is listed by :mod:`featcache.extraction.dataset` with ``os.scandir``, whose symlink
checks a store has no use for, and fsspec is never imported for it. fsspec's backends take their
credentials from the standard places (environment, config files, instance roles); featcache never
sees, prints or stores them. An object's identity for reuse is its size and a 64-bit stamp of its
ETag or generation (the cache's ``mtime_ns`` column), as a file's is its size and modification time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from featcache.errors import ConfigError, DatasetError
from featcache.hashing import bytes_sha256, file_sha256
from featcache.locations import is_url, shown_location
from featcache.names import encode_name

#: files larger than this are hashed and decoded from disk in two passes instead of read into memory
READ_WHOLE_LIMIT = 64 << 20

#: the info fields that name an object's version, the first one a store gives wins
_VERSION_FIELDS = ("generation", "ETag", "etag", "VersionId", "version_id", "md5Hash", "LastModified", "mtime")

#: the fsspec package that each scheme needs, and featcache's extra that installs it
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}


class LocalFolder:
    """Files under a local folder, read with ``os``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def read(self, relpath: str, size: int) -> tuple[str, bytes | Path]:
        """(sha256, the bytes, or the path itself when the file is larger than READ_WHOLE_LIMIT); OSError
        when it cannot be read."""
        path = self.root / relpath
        if size > READ_WHOLE_LIMIT:
            return file_sha256(path), path
        data = path.read_bytes()
        return bytes_sha256(data), data

    @staticmethod
    def reason(exc: OSError) -> str:
        return f"cannot read file: {exc.strerror}"


class ObjectStore:
    """Objects under a URL (``s3://bucket/photos``), listed and read through fsspec."""

    def __init__(self, url: str):
        self.url = url
        self.fs, self.root = _filesystem(url)
        self.root = self.root.rstrip("/")

    def listing(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every object under the URL, in the store's order: paths relative to it (bytes (n,)), sizes and
        version stamps (int64 (n,) each)."""
        try:
            found = self.fs.find(self.root, detail=True, withdirs=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(
                f"cannot list {shown_location(self.url)} ({_said(exc)}); check the URL and the store's credentials"
            ) from None
        prefix = self.root + "/"
        cut = len(prefix)
        names = [name for name, info in found.items() if name.startswith(prefix) and info.get("type") != "directory"]
        paths = np.array([encode_name(name[cut:]) for name in names], dtype=bytes) if names else np.zeros(0, dtype="S1")
        size = np.fromiter((found[name].get("size") or 0 for name in names), dtype=np.int64, count=len(names))
        stamps = np.fromiter((version_stamp(found[name]) for name in names), dtype=np.int64, count=len(names))
        return paths, size, stamps

    def read(self, relpath: str, size: int) -> tuple[str, bytes]:
        """(sha256, the object's bytes); OSError when it cannot be read, its ``strerror`` the store's reason.

        Throttling and transient failures are retried with backoff by the store's own client before
        this returns or raises (s3fs retries SlowDown, botocore its standard errors, as AWS_MAX_ATTEMPTS
        and AWS_RETRY_MODE say; gcsfs and adlfs likewise), so featcache adds no retry of its own on top.
        """
        try:
            data = self.fs.cat_file(f"{self.root}/{relpath}")
        except OSError:
            raise
        except Exception as exc:  # a backend's own error type: the object cannot be read now
            raise OSError(0, _said(exc)) from None
        return bytes_sha256(data), data

    @staticmethod
    def reason(exc: OSError) -> str:
        return f"cannot read object: {_said(exc)}"


def open_source(location) -> LocalFolder | ObjectStore:
    """The source of a data folder: a :class:`LocalFolder` for a path, an :class:`ObjectStore` for a URL."""
    return ObjectStore(location) if is_url(location) else LocalFolder(location)


def version_stamp(info: dict) -> int:
    """An object's version (its ETag, generation, ...; see _VERSION_FIELDS) as a signed 64-bit number: the first
    8 bytes of the sha256 of its text."""
    value = ""
    for key in _VERSION_FIELDS:
        if info.get(key) not in (None, ""):
            value = info[key]
            break
    return int.from_bytes(hashlib.sha256(str(value).encode()).digest()[:8], "big", signed=True)


def _filesystem(url: str):
    """(fsspec filesystem, path inside it) of ``url``; ConfigError when its package is not installed."""
    scheme = url.split("://", 1)[0].lower()
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url, skip_instance_cache=True)  # a fresh listing each run, not one cached in-process
    except ImportError:
        extra = _EXTRAS.get(scheme, scheme)
        raise ConfigError(
            f"reading {scheme}:// needs its fsspec package; install it with: pip install 'featcache[{extra}]'"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"cannot read {shown_location(url)} ({_said(exc)}); pass a folder or an fsspec URL") from None


def _said(exc: BaseException) -> str:
    """What an exception says, on one line: the store's own message where there is one."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]
