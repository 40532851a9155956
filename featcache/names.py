"""Names read from a file system (paths, class folders): how they are stored as bytes and shown as text.

A POSIX file name is any bytes but ``/`` and NUL. featcache holds names as ``str`` the way Python's
:func:`os.fsdecode` does: UTF-8, with each byte that is not UTF-8 kept as a lone surrogate
(``surrogateescape``), so that ``b"\\xff.jpg"`` becomes ``"\\udcff.jpg"`` and opening that ``str`` opens
the same file. Stored, a name is its original bytes again; shown, such a byte reads ``\\xff``.
"""

from __future__ import annotations

import hashlib
import re

#: characters a file name made from a name read from a cache or manifest keeps; the others become "_"
NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._+-]")
#: the longest such file name
NAME_LENGTH = 80


def encode_name(name) -> bytes:
    """``name`` (``str`` or ``bytes``) as the bytes the file system knows it by."""
    return name.encode("utf-8", "surrogateescape") if isinstance(name, str) else bytes(name)


def decode_name(name) -> str:
    """Stored bytes (or a ``str``) as the name's ``str``: the inverse of :func:`encode_name`."""
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else str(name)


def shown(text: str) -> str:
    """``text`` printable anywhere (a terminal, a figure, a UTF-8 file): a byte of a name that is not UTF-8
    shows as ``\\xff``, as Python writes it."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_component(name: str) -> str:
    """``name`` (a backbone, class or model name read from a cache, manifest or head) as one safe file name.

    A name of letters, digits and ``._+-`` that does not start with a dot and fits NAME_LENGTH
    is kept as it is. Any other (``/``, ``\\``, NUL, ``..``, empty, too long) has each other
    character replaced by ``_``, leading dots dropped, is cut short, and gets ``-`` and 8 hex
    digits of its sha256, so two names that had to change stay two names.
    """
    name = str(name)
    kept = NAME_CHARACTERS.sub("_", name).lstrip(".")
    if name and kept == name and len(name) <= NAME_LENGTH:
        return name
    digest = hashlib.sha256(encode_name(name)).hexdigest()[:8]
    return f"{kept[: NAME_LENGTH - 9]}-{digest}" if kept else f"_-{digest}"
