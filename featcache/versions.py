"""The versions of installed packages, as recorded with caches and compared by verify."""

from __future__ import annotations

from importlib import metadata


def package_version(package: str) -> str:
    """The installed version of ``package``, or ``unknown``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"
