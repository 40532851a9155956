"""The Python API: one function per command, taking the command's options as keyword arguments."""

from __future__ import annotations

from pathlib import Path

from featcache.config import DEFAULT_CACHE, ExtractConfig
from featcache.extractor import ExtractResult


def extract(
    data_dir: str | Path,
    output: str | Path = DEFAULT_CACHE,
    *,
    progress: bool = False,
    backbone=None,
    **options,
) -> ExtractResult:
    """Extract the feature cache ``output`` from the images of ``data_dir``.

    ``options`` are the fields of :class:`featcache.config.ExtractConfig` (``image_size``,
    ``batch_size``, ``weights``, ``manifest``, ``val_fraction``, ``test_fraction``,
    ``interpolation``, ``strict``, ``overwrite``, ``workers``). ``backbone`` replaces the
    frozen Xception (tests pass a small fake).
    """
    from featcache.extractor import extract as run

    config = ExtractConfig(data_dir=Path(data_dir), output=Path(output), **options)
    return run(config, backbone=backbone, progress=progress)
