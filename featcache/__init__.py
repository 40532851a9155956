"""featcache: extract frozen-backbone image features once, then train heads on the cached vectors.

The Python API has the names of the commands: ``featcache.extract(...)`` does what
``featcache extract`` does; ``featcache.load(...)`` and ``featcache.dataset(...)`` hand a cache's
vectors to one's own model. Heavy modules load on first use, so importing featcache is instant.
"""

from importlib import import_module

__all__ = [
    "extract",
    "info",
    "compact",
    "predict",
    "export",
    "verify",
    "train_head",
    "compare",
    "sweep",
    "leaks",
    "labels",
    "load",
    "dataset",
    "HeadConfig",
    "ExtractConfig",
    "FeatcacheError",
]

_LAZY = {
    "extract": ("featcache.api", "extract"),
    "info": ("featcache.api", "info"),
    "compact": ("featcache.api", "compact"),
    "predict": ("featcache.api", "predict"),
    "export": ("featcache.api", "export"),
    "verify": ("featcache.api", "verify"),
    "train_head": ("featcache.api", "train_head"),
    "compare": ("featcache.api", "compare"),
    "sweep": ("featcache.api", "sweep"),
    "leaks": ("featcache.api", "leaks"),
    "labels": ("featcache.api", "labels"),
    "load": ("featcache.api", "load"),
    "dataset": ("featcache.api", "dataset"),
    "HeadConfig": ("featcache.config", "HeadConfig"),
    "ExtractConfig": ("featcache.config", "ExtractConfig"),
    "FeatcacheError": ("featcache.errors", "FeatcacheError"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'featcache' has no attribute {name!r}")
