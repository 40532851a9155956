"""cache/lock.py: one writer per cache, refused at once, freed by the OS when its holder dies."""

from __future__ import annotations

import subprocess
import sys

import pytest

from featcache.cache.lock import CacheLock
from featcache.errors import LockedError


def test_second_holder_is_refused_at_once_naming_the_first(tmp_path):
    with CacheLock(tmp_path / "c.h5"):
        with pytest.raises(LockedError, match=r"is being written by featcache process \d+") as caught:
            CacheLock(tmp_path / "c.h5").acquire()
        assert "-o" in str(caught.value)
    with CacheLock(tmp_path / "c.h5"):  # released on exit
        pass


def test_lock_of_a_killed_process_is_free(tmp_path):
    script = (
        "import os, sys; from featcache.cache.lock import CacheLock\n"
        f"CacheLock({str(tmp_path / 'c.h5')!r}).acquire(); os.kill(os.getpid(), 9)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert done.returncode == -9
    with CacheLock(tmp_path / "c.h5"):
        assert (tmp_path / "c.h5.lock").exists()
