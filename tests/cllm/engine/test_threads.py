"""The engine's worker pool runs each caller's slices at that caller's CPU priority."""

import os
import threading

import pytest

from cllm.engine import threads

pytestmark = pytest.mark.skipif(
    not hasattr(os, "getpriority") or not os.path.exists("/proc/self/task"),
    reason="per-thread nice values are a Linux feature",
)


def _in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()))
    t.start()
    t.join()
    return out["v"]


def test_a_lowered_caller_gets_workers_at_its_priority_and_others_do_not():
    base = threads.thread_nice()

    def lowered():
        assert threads.lower_priority(base + 3)
        return threads.run_parallel(lambda _: threads.thread_nice(), [0, 1, 2])

    assert _in_thread(lowered) == [base + 3] * 3
    # the calling thread here, and the pool it uses, kept their priority
    assert threads.thread_nice() == base
    assert threads.run_parallel(lambda _: threads.thread_nice(), [0, 1, 2]) == [base] * 3


def test_lower_priority_never_raises_it():
    base = threads.thread_nice()

    def twice():
        threads.lower_priority(base + 4)
        threads.lower_priority(base + 1)  # asks for more priority: kept at +4
        return threads.thread_nice()

    assert _in_thread(twice) == base + 4
