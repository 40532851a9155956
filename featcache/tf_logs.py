"""TensorFlow's C++ and absl log lines on the console: hidden for the command line, shown with ``-v``."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"

#: Native log lines below FATAL, in absl's format (``I0000 00:00:17… 123 file.cc:31] …``) and TensorFlow's
#: older one (``2025-01-01 12:00:00.000: W tensorflow/…``), and absl's notice that precedes them.
NATIVE_LOG_LINE = re.compile(
    r"[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
)


def configure(verbose: bool) -> None:
    """Hide TensorFlow's native logs below FATAL and absl's below ERROR, or show them all when ``verbose``.

    A ``TF_CPP_MIN_LOG_LEVEL`` the user set is kept. TensorFlow reads it when imported, so this runs
    before; but its libraries print some lines while they load, before it is read (TensorFlow 2.19
    and later), so at level 3 the import of ``tensorflow`` itself runs with those lines filtered out.
    """
    os.environ.setdefault(LEVEL_ENV, "0" if verbose else "3")
    if verbose or os.environ[LEVEL_ENV] != "3" or "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


class _QuietImport:
    """Finds ``tensorflow`` as the other finders do, and hands back a loader that imports it quietly."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        from importlib.util import find_spec

        spec = find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader:
    """Runs the real loader with native log lines held back, then turns absl's Python logging down."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with native_logs_filtered():
            self._loader.exec_module(module)
        absl_logging = sys.modules.get("absl.logging")
        if absl_logging is not None:
            absl_logging.set_verbosity(absl_logging.ERROR)


@contextlib.contextmanager
def native_logs_filtered():
    """Hold back what C++ code writes to file descriptor 2, then pass on all but its log lines below FATAL."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            sys.stderr.write(kept_lines(held.read().decode(errors="replace")))


def kept_lines(text: str) -> str:
    """``text`` without TensorFlow's native log lines below FATAL."""
    return "".join(line for line in text.splitlines(keepends=True) if not NATIVE_LOG_LINE.match(line))
