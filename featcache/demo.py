"""Where the demo's images come from: ``$FEATCACHE_DATA``, else clothing-dataset-small downloaded once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from featcache.errors import DatasetError

DATA_ENV = "FEATCACHE_DATA"
URL_ENV = "FEATCACHE_DEMO_URL"
#: the dataset's public repository as one zip; it unpacks to clothing-dataset-small-master/{train,validation,test}/
URL = "https://github.com/alexeygrigorev/clothing-dataset-small/archive/refs/heads/master.zip"
_WHAT_TO_SET = f"set {DATA_ENV} to a folder of train/validation/test class folders, or {URL_ENV} to a reachable archive"


def data_dir(cache_dir: str | Path | None = None) -> Path:
    """The folder of train/, validation/ and test/ class folders the demo extracts.

    ``$FEATCACHE_DATA`` when set, as given. Otherwise the archive at ``$FEATCACHE_DEMO_URL`` (default
    :data:`URL`) is downloaded with ``keras.utils.get_file`` into ``cache_dir`` (default: Keras' cache
    folder, ``$KERAS_HOME`` or ``~/.keras``), under ``datasets/`` with a name made from the address, so
    it is downloaded once and another address never reuses it. Keras unpacks it at every call (a few
    seconds); the folder returned is the one inside it that holds ``train/``.
    Raises :class:`featcache.errors.DatasetError` when it cannot be downloaded or holds no ``train/``.
    """
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    url = os.environ.get(URL_ENV) or URL
    import keras

    if cache_dir is not None:  # Keras falls back to /tmp/.keras when the folder is not there
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    name = "clothing-dataset-small-" + hashlib.sha256(url.encode()).hexdigest()[:12]
    try:
        # a name without a suffix: Keras keeps the archive as <name>_archive and unpacks it into <name>/
        unpacked = Path(keras.utils.get_file(name, origin=url, extract=True, cache_dir=cache_dir))
    except Exception as exc:  # URL and HTTP errors, unreadable archives
        # Keras words it "URL fetch failure on <url>: <HTTP code or None> -- <reason>"
        reason = str(exc).splitlines()[0].replace(f"URL fetch failure on {url}: ", "").replace("None -- ", "")
        raise DatasetError(
            f"could not download the clothing data from {url} ({reason[:160]}); {_WHAT_TO_SET}"
        ) from None
    return _with_train(unpacked, url)


def _with_train(unpacked: Path, url: str) -> Path:
    """The folder that holds ``train/``: ``unpacked`` itself or the one top folder of the archive."""
    candidates = [unpacked, *sorted(p for p in unpacked.glob("*") if p.is_dir())] if unpacked.is_dir() else []
    for folder in candidates:
        if (folder / "train").is_dir():
            return folder
    raise DatasetError(
        f"the archive from {url}, unpacked into {unpacked}, has no train/ folder; delete {unpacked}_archive to "
        f"download it again, or {_WHAT_TO_SET}"
    )
