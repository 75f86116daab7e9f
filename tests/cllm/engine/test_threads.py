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


@pytest.mark.parametrize("spins", [0, 30_000])
def test_a_team_runs_every_part_once_a_round(monkeypatch, spins):
    """Rounds in a row, helpers spinning between them or (0 spins) asleep: every part runs
    once a round, at once (they meet at a barrier), and run returns part 0's result."""
    import threading

    from cllm.engine import threads as T

    monkeypatch.setattr(T, "TEAM_SPINS", spins)
    team = T.Team(3)
    meet = threading.Barrier(3, timeout=30)
    for r in range(50):
        seen = []

        def fn(part, r=r, seen=seen):
            meet.wait()  # all three at once, or this times out
            seen.append(part)
            return (r, part)

        assert team.run(fn) == (r, 0)
        assert sorted(seen) == [0, 1, 2]


def test_a_team_hands_a_helper_failure_to_the_caller_and_goes_on():
    from cllm.engine import threads as T

    team = T.Team(2)

    def fn(part):
        if part == 1:
            raise ValueError("helper failed")
        return "caller"

    with pytest.raises(ValueError, match="helper failed"):
        team.run(fn)
    assert team.run(lambda part: part) == 0  # the next round runs


def test_team_parts_that_signal_their_own_end():
    """signals=True: each helper's part ends by signalling Team.DONE itself (as the decoding
    kernel does, without the GIL); run waits for exactly those signals."""
    import numpy as np

    from cllm.engine import kernels as K
    from cllm.engine import threads as T

    team = T.Team(3)
    ran = []

    def fn(part, flag):
        ran.append(part)
        K.signal(flag, T.Team.DONE)

    for _ in range(20):
        ran.clear()
        team.run(fn, signals=True)
        assert sorted(ran) == [0, 1, 2]
    assert team.flag[T.Team.DONE] == 2 * 20  # the helpers' signals only
    assert T.run_team(lambda part, flag: part, 1, signals=True) == 0
    assert isinstance(team._own, np.ndarray)
