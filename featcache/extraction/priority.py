"""Decoding threads yield the CPU to the backbone's threads, without ever starving."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import TimeoutError as WaitedTooLong  # not the builtin before Python 3.11

log = logging.getLogger(__name__)


class DecodePriority:
    """Decoding threads yield the CPU to the backbone's threads, without ever starving.

    On Linux the threads run under SCHED_IDLE: they use only the cycles the forward pass leaves
    idle and never preempt its threads (a preempted thread stalls the other at the next sync
    point). When the main thread has waited ``patience`` seconds for a decode, other processes
    are taking the CPU, and the threads are raised to an ordinary low priority (nice 10) for the
    rest of the run. Elsewhere, or where not allowed, they run at ordinary priority.
    """

    def __init__(self, patience: float = 0.25):
        self.patience = patience
        self.raised = False
        self._threads: list[int] = []
        self._lock = threading.Lock()

    def lower(self) -> None:
        """Thread initializer of the decoding pool."""
        tid = threading.get_native_id()
        with self._lock:
            self._threads.append(tid)
            _set_priority(tid, idle=not self.raised)

    def wait(self, future):
        """``future.result()``, raising the decoding threads if it keeps the main thread waiting."""
        try:
            return future.result(timeout=self.patience)
        except WaitedTooLong:
            self.raise_()
            return future.result()

    def raise_(self) -> None:
        with self._lock:
            if not self.raised:
                self.raised = True
                log.debug("decoding threads were starved; raising them to nice 10")
                for tid in self._threads:
                    _set_priority(tid, idle=False)


def _set_priority(tid: int, idle: bool) -> None:
    try:
        policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
        os.sched_setscheduler(tid, policy, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 10)
    except (AttributeError, OSError):
        pass
