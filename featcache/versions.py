"""The versions of installed packages and the CPU model, as recorded with caches (versions compared by verify)."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path


def package_version(package: str) -> str:
    """The installed version of ``package``, or ``unknown``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def cpu_name() -> str:
    """The CPU model, as /proc/cpuinfo names it (else the platform's word for it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
