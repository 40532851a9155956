"""What a cache holds: counts per split and class, provenance, quarantine, unfinished work."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from featcache import store


@dataclass
class CacheInfo:
    """A summary of one cache, as ``featcache info`` prints it."""

    path: Path
    rows: int
    per_split: dict[str, int]
    per_class: dict[str, dict[str, int]]  # split -> class -> rows
    class_names: list[str]
    attrs: dict
    quarantine: list[store.QuarantineEntry]
    pending_parts: int

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "rows": self.rows,
            "per_split": self.per_split,
            "per_class": self.per_class,
            "class_names": self.class_names,
            "provenance": self.attrs,
            "quarantine": [{"path": q.path, "reason": q.reason} for q in self.quarantine],
            "pending_parts": self.pending_parts,
        }


def info(cache: str | Path) -> CacheInfo:
    """Summarise the cache at ``cache`` without loading its vectors."""
    data = store.read_cache(Path(cache), features=False)
    per_split = Counter(data.rows.split)
    per_class: dict[str, Counter] = {}
    for split, label in zip(data.rows.split, data.rows.label):
        per_class.setdefault(split, Counter())[data.class_names[label]] += 1
    return CacheInfo(
        path=Path(cache),
        rows=len(data.rows),
        per_split={s: per_split.get(s, 0) for s in ("train", "validation", "test")},
        per_class={s: dict(sorted(c.items())) for s, c in per_class.items()},
        class_names=data.class_names,
        attrs=data.attrs,
        quarantine=data.quarantine,
        pending_parts=len(store.list_parts(store.parts_dir(Path(cache)))),
    )
