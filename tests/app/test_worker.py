"""The background worker: results come back on the caller's thread, in order, errors too."""

from __future__ import annotations

import threading
import time

from app.worker import Worker
from cllm.errors import ValidationError


def _poll_until(w: Worker, cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        w.poll()
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_jobs_run_in_order_and_callbacks_on_the_polling_thread():
    w = Worker()
    seen, threads = [], set()
    for i in range(5):
        w.submit(
            lambda i=i: i * i, done=lambda r: (seen.append(r), threads.add(threading.get_ident()))
        )
    assert w.busy == 5
    _poll_until(w, lambda: len(seen) == 5)
    assert seen == [0, 1, 4, 9, 16] and threads == {threading.get_ident()} and w.busy == 0
    w.stop()


def test_errors_reach_the_error_callback_or_the_default():
    caught, default = [], []
    w = Worker(on_error=default.append)

    def refuse():
        raise ValidationError("no such thing")

    w.submit(refuse, error=caught.append)
    w.submit(refuse)
    _poll_until(w, lambda: caught and default)
    assert str(caught[0]) == "no such thing" and isinstance(default[0], ValidationError)
    w.stop()


def test_a_failing_callback_does_not_break_polling():
    errors, seen = [], []
    w = Worker(on_error=errors.append)
    w.submit(lambda: 1, done=lambda r: 1 / 0)
    w.submit(lambda: 2, done=seen.append)
    _poll_until(w, lambda: seen == [2])
    assert isinstance(errors[0], ZeroDivisionError)
    w.stop()


def test_periodic_jobs_run_while_idle():
    w = Worker()
    ticks = []
    w.every(0.05, lambda: time.monotonic(), ticks.append)
    counted = []

    def poll():
        counted.append(w.poll())
        return len(ticks) >= 3

    _poll_until(w, poll)
    # periodic results are neither pending jobs nor results that force the studio to repaint
    assert w.busy == 0 and sum(counted) == 0
    w.submit(lambda: 1, done=ticks.append)
    end = time.monotonic() + 5
    while w.busy and time.monotonic() < end:
        counted.append(w.poll())
        time.sleep(0.01)
    assert sum(counted) == 1
    w.stop()
