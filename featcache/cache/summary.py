"""What a cache holds (``featcache info``): counts per split and class, provenance, quarantine, unfinished work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from featcache.cache.layout import QuarantineEntry, read_cache
from featcache.cache.parts import list_parts, parts_dir


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

    def summary(self) -> str:
        """Rows per split and class, provenance, quarantine, unfinished work: what ``featcache info`` prints."""
        lines = [f"{self.path}: {self.rows} rows, {len(self.class_names)} classes"]
        lines.append("  " + " ".join(f"{s} {n}" for s, n in self.per_split.items()))
        lines.append("  " + " " * 12 + "".join(f"{s[:10]:>12}" for s in self.per_split))
        for name in self.class_names:
            counts = "".join(f"{self.per_class.get(s, {}).get(name, 0):>12}" for s in self.per_split)
            lines.append(f"  {name[:12]:<12}{counts}")
        lines.append("provenance:")
        lines += [f"  {key}: {self.attrs[key]}" for key in sorted(self.attrs) if key != "fingerprint_fields"]
        lines.append(f"quarantine: {len(self.quarantine)} file(s)")
        lines += [f"  {entry.path}: {entry.reason}" for entry in self.quarantine]
        if self.pending_parts:
            lines.append(
                f"unfinished extraction: {self.pending_parts} committed part(s) not yet in the cache; "
                f"rerun featcache extract to fold them in"
            )
        return "\n".join(lines)


def info(cache: str | Path) -> CacheInfo:
    """Summarise the cache at ``cache`` without loading its vectors."""
    data = read_cache(Path(cache), with_vectors=False)
    per_split, per_class = data.rows.counts(data.class_names)
    return CacheInfo(
        path=Path(cache),
        rows=len(data.rows),
        per_split=per_split,
        per_class=per_class,
        class_names=data.class_names,
        attrs=data.attrs,
        quarantine=data.quarantine,
        pending_parts=len(list_parts(parts_dir(Path(cache)))),
    )
