"""Names read from a file system (paths, class folders): how they are stored as bytes and shown as text.

A POSIX file name is any bytes but ``/`` and NUL. featcache holds names as ``str`` the way Python's
:func:`os.fsdecode` does: UTF-8, with each byte that is not UTF-8 kept as a lone surrogate
(``surrogateescape``), so that ``b"\\xff.jpg"`` becomes ``"\\udcff.jpg"`` and opening that ``str`` opens
the same file. Stored, a name is its original bytes again; shown, such a byte reads ``\\xff``.
"""

from __future__ import annotations


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
