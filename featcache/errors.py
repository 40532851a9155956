"""The featcache error hierarchy: every message says what happened and what to do."""


class FeatcacheError(Exception):
    """Base class of every error featcache raises on purpose."""


class ConfigError(FeatcacheError):
    """An option or argument has a value featcache cannot use."""


class DatasetError(FeatcacheError):
    """The input folder or manifest does not describe a usable dataset."""


class CacheError(FeatcacheError):
    """A feature cache is missing, unreadable, not featcache's, or does not match."""


class FingerprintMismatch(CacheError):
    """An existing cache was made with settings that change the vectors."""


class LockedError(CacheError):
    """Another featcache process is writing the same cache."""


class WeightsError(FeatcacheError):
    """The backbone weights cannot be found, downloaded or loaded."""


class BadImagesError(FeatcacheError):
    """Some images could not be used and ``strict`` was asked for."""


class HeadError(FeatcacheError):
    """A trained head is missing, unreadable or does not match a cache."""


class ExportError(FeatcacheError):
    """An end-to-end model cannot be written, or does not reproduce the head's predictions."""
