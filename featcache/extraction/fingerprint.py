"""The fingerprint of a cache: a hash of everything that changes its vectors, and what changed when it differs."""

from __future__ import annotations

import json
from pathlib import Path

from featcache.config import ExtractConfig
from featcache.hashing import json_sha256

FINGERPRINT_VERSION = 1


def fingerprint_fields(config: ExtractConfig, backbone) -> dict:
    """Everything that changes the vectors; its hash is the cache's fingerprint."""
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        **backbone.identity(),
        "preprocessing": config.preprocess.to_dict(),
        "precision": config.precision,
    }


def fingerprint_of(fields: dict) -> str:
    return json_sha256(fields)


def mismatch_message(output: Path, attrs: dict, fields: dict) -> str:
    """One line naming each setting that differs between the cache at ``output`` and this run."""
    try:
        before = json.loads(attrs.get("fingerprint_fields", "{}"))
    except ValueError:
        before = {}
    flat_before, flat_now = _flatten(before), _flatten(fields)
    changed = sorted(k for k in flat_now if flat_before.get(k) != flat_now[k])
    what = ", ".join(f"{k}: {flat_before.get(k)!r} -> {flat_now[k]!r}" for k in changed) or "settings"
    return (
        f"{output} was made with other settings ({what}); vectors of different settings never mix — "
        f"write to another file with -o, or pass --overwrite to replace it"
    )


def _flatten(fields: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
