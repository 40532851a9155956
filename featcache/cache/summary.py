"""What a cache holds (``featcache info``): counts per split and class, provenance, quarantine, unfinished work."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from featcache.cache.layout import SPLITS, QuarantineEntry, Views, read_cache, read_views
from featcache.cache.reader import count_rows, read_row_index
from featcache.cache.shards import ShardProblem, check_shards, check_views, list_shards, shards_dir


@dataclass
class CacheInfo:
    """A summary of one cache, as ``featcache info`` prints it."""

    path: Path
    rows: int
    per_split: dict[str, int]
    per_class: dict[str, dict[str, int]]  # split -> class -> rows
    class_names: list[str]
    attrs: dict
    quarantine: list[QuarantineEntry]
    pending_shards: int  # committed by a run that did not finish
    shard_problems: list[ShardProblem] = field(default_factory=list)
    shards: int = 0
    views: dict | None = None  # per split, views and the policy they were made with

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "rows": self.rows,
            "per_split": self.per_split,
            "per_class": self.per_class,
            "class_names": self.class_names,
            "provenance": self.attrs,
            "quarantine": [{"path": q.path, "reason": q.reason} for q in self.quarantine],
            "pending_shards": self.pending_shards,
            "shards": self.shards,
            "shard_problems": [{"file": p.file, "reason": p.reason, "rows": p.rows} for p in self.shard_problems],
            "views": self.views,
        }

    def summary(self) -> str:
        """Rows per split and class, provenance, quarantine, unfinished work: what ``featcache info`` prints."""
        lines = [f"{self.path}: {self.rows} rows, {len(self.class_names)} classes"]
        lines.append("  " + " ".join(f"{s} {n}" for s, n in self.per_split.items()))
        lines.append("  " + " " * 12 + "".join(f"{s[:10]:>12}" for s in self.per_split))
        for name in self.class_names:
            counts = "".join(f"{self.per_class.get(s, {}).get(name, 0):>12}" for s in self.per_split)
            lines.append(f"  {name[:12]:<12}{counts}")
        lines += _views_lines(self.views)
        lines.append("provenance:")
        lines += [f"  {key}: {self.attrs[key]}" for key in sorted(self.attrs) if key != "fingerprint_fields"]
        lines.append(f"quarantine: {len(self.quarantine)} file(s)")
        lines += [f"  {entry.path}: {entry.reason}" for entry in self.quarantine]
        if self.pending_shards:
            lines.append(
                f"unfinished extraction: {self.pending_shards} committed shard(s) not yet in the cache; "
                f"rerun featcache extract to fold them in"
            )
        for problem in self.shard_problems:
            lines.append(
                f"damaged shard {problem.file}: {problem.reason}; {problem.rows} row(s) affected, "
                f"featcache extract computes them again"
            )
        return "\n".join(lines)


def _views_lines(views: dict | None) -> list[str]:
    if not views:
        return []
    per = "  ".join(f"{s} {views['per_split'].get(s, 0)}" for s in SPLITS)
    return [
        f"augmented views: {views['count']} per train image, policy {views['policy']['name']}, seed {views['seed']}",
        f"  views per split: {per}",
    ]


def views_summary(views: Views | None, split) -> dict | None:
    """Views per split (by their clean row's split, int8 codes into SPLITS), count, policy and seed."""
    if views is None:
        return None
    codes = split[views.row] if len(views) else split[:0]
    return {
        "count": views.count,
        "policy": json.loads(views.attrs.get("policy", "{}")),
        "seed": int(views.attrs.get("seed", 0)),
        "views": len(views),
        "per_split": {name: int((codes == i).sum()) for i, name in enumerate(SPLITS)},
    }


def info(cache: str | Path) -> CacheInfo:
    """Summarise the cache at ``cache`` from its labels and splits (no vectors, no per-row strings);
    every shard is opened and checked."""
    data = read_cache(Path(cache), with_vectors=False, with_rows=False)
    counts = count_rows(cache, data.class_names)
    used = set(data.locations.files) if data.locations else set()
    pending = [s for s in list_shards(shards_dir(Path(cache))) if s.name not in used]
    views = read_views(Path(cache))
    return CacheInfo(
        path=Path(cache),
        rows=counts.rows,
        per_split=counts.per_split,
        per_class=counts.per_class,
        class_names=data.class_names,
        attrs=data.attrs,
        quarantine=data.quarantine,
        pending_shards=len(pending),
        shard_problems=check_shards(data) + check_views(Path(cache), views),
        shards=len(used),
        views=views_summary(views, read_row_index(cache).split) if views is not None else None,
    )
