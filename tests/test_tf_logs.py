"""tf_logs.py: TensorFlow's native log lines are held back for the command line, and shown with -v."""

from __future__ import annotations

import os
import sys

import pytest

from featcache import tf_logs

# Lines TensorFlow 2.21 and older versions print on a machine without a GPU.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1795960909.208820    3429 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.\n",
    "E0000 00:00:1795960925.949793    3453 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
    "W0000 00:00:1758131045.228000 3722035 computation_placer.cc:177] computation placer already registered.\n",
    "2025-09-17 14:44:05.157831: I tensorflow/core/util/port.cc:153] oneDNN custom operations are on.\n",
]
KEPT = [
    "F0000 00:00:1795960925.949793    3453 status.cc:52] Check failed: a fatal error\n",
    "Traceback (most recent call last):\n",
    "Error: weights file /x.h5 does not exist\n",
]


def test_native_log_lines_below_fatal_are_dropped_and_the_rest_kept():
    assert tf_logs.kept_lines("".join(NOISE[:2] + KEPT[:1] + NOISE[2:] + KEPT[1:])) == "".join(KEPT)


def test_what_native_code_writes_to_stderr_is_filtered(capfd):
    with tf_logs.native_logs_filtered():
        os.write(2, "".join(NOISE + KEPT).encode())
    assert capfd.readouterr().err == "".join(KEPT)


@pytest.fixture
def fresh(monkeypatch):
    """A process that has neither set the level nor imported TensorFlow yet."""
    monkeypatch.delenv(tf_logs.LEVEL_ENV, raising=False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)


def _filtering() -> bool:
    return any(isinstance(finder, tf_logs._QuietImport) for finder in sys.meta_path)


def test_by_default_tensorflow_logs_are_hidden(fresh):
    tf_logs.configure(verbose=False)
    tf_logs.configure(verbose=False)
    assert os.environ[tf_logs.LEVEL_ENV] == "3"
    assert sum(isinstance(finder, tf_logs._QuietImport) for finder in sys.meta_path) == 1


def test_verbose_shows_them(fresh):
    tf_logs.configure(verbose=True)
    assert os.environ[tf_logs.LEVEL_ENV] == "0" and not _filtering()


def test_a_level_the_user_set_is_kept(fresh, monkeypatch):
    monkeypatch.setenv(tf_logs.LEVEL_ENV, "1")
    tf_logs.configure(verbose=False)
    assert os.environ[tf_logs.LEVEL_ENV] == "1" and not _filtering()
