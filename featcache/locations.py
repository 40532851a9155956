"""Where a data folder is: a local path, or an fsspec URL (``s3://bucket/photos``, ``gs://``, ``az://``)."""

from __future__ import annotations

import re
from pathlib import Path

#: a URL's scheme, as RFC 3986 spells it, then ``://``
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def data_location(value) -> Path | str:
    """``value`` as featcache holds a data folder: a ``Path`` for a local folder (``file://`` URLs
    included), the URL itself as a ``str`` for any other scheme."""
    text = str(value)
    found = _SCHEME.match(text)
    if found is None:
        return Path(value)
    if found.group(1).lower() == "file":
        return Path(text[len(found.group(0)) :] or "/")
    return text.rstrip("/")


def is_url(location) -> bool:
    """True for a location held as a URL (an object store or any other fsspec filesystem)."""
    return isinstance(location, str) and _SCHEME.match(location) is not None


def shown_location(location) -> str:
    """A location as it is recorded and shown: a URL without any user information (``user:secret@``)."""
    if not is_url(location):
        return str(location)
    scheme, rest = location.split("://", 1)
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"
