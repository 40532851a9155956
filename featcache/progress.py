"""Going through work in batches, with a progress bar on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of ``items`` of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def progress_bar(total: int, enabled: bool, desc: str, **options):
    """A tqdm bar on stderr, shown only when ``enabled`` and stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, disable=not (enabled and sys.stderr.isatty()), **options)
