"""A background thread for everything that touches the disk, so the UI thread never waits on it.

Jobs run one after another, in the order submitted; their results come back through a queue and
the UI thread runs the callbacks in `poll()`, once per frame, so callbacks may touch app state
freely. Periodic jobs (the models-folder watch) run whenever the job queue is idle.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("app")

Callback = Callable[[Any], None]


class Worker:
    def __init__(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.on_error = on_error or (lambda err: None)
        self._jobs: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._periodic: list[list] = []  # [interval, next_time, fn, done]
        self._lock = threading.Lock()
        self._pending = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="app-worker", daemon=True)
        self._thread.start()

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        done: Callback | None = None,
        error: Callable[[BaseException], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """Run fn(*args, **kwargs) in the background; done(result) or error(exc) runs on the UI
        thread at the next poll()."""
        with self._lock:
            self._pending += 1
        self._jobs.put((fn, args, kwargs, done, error))

    def every(self, seconds: float, fn: Callable[[], Any], done: Callback) -> None:
        """Run fn every `seconds` while idle; done(result) on the UI thread."""
        with self._lock:
            self._periodic.append([seconds, 0.0, fn, done])

    @property
    def busy(self) -> int:
        """Jobs submitted whose callbacks have not run yet."""
        with self._lock:
            return self._pending

    def poll(self) -> int:
        """Run the callbacks of finished jobs (UI thread); returns how many results of submitted
        jobs came. Periodic jobs' results are not counted: a callback of theirs that changes what
        is shown says so itself (a new listing bumps the state's version, a problem is a toast),
        so an unchanged scan every second does not force a repaint."""
        n = 0
        while True:
            try:
                ok, value, cb, counted = self._results.get_nowait()
            except queue.Empty:
                return n
            if counted:
                n += 1
                with self._lock:
                    self._pending -= 1
            try:
                if cb is not None:
                    cb(value)
                elif not ok:
                    self.on_error(value)
            except Exception as err:  # a callback's bug must not take the main loop down
                log.exception("worker callback failed")
                self.on_error(err)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=0.1)
            except queue.Empty:
                self._run_periodic()
                continue
            if job is None:
                return
            fn, args, kwargs, done, error = job
            try:
                self._results.put((True, fn(*args, **kwargs), done, True))
            except Exception as err:
                if not _is_user_error(err):
                    log.exception("background job %s failed", getattr(fn, "__name__", fn))
                self._results.put((False, err, error, True))
            self._run_periodic()

    def _run_periodic(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._periodic if p[1] <= now]
            for p in due:
                p[1] = now + p[0]
        for _, _, fn, done in due:
            try:
                self._results.put((True, fn(), done, False))
            except Exception as err:
                if not _is_user_error(err):
                    log.exception("periodic job failed")
                self._results.put((False, err, None, False))


def _is_user_error(err: BaseException) -> bool:
    from cllm.errors import CLLMError

    return isinstance(err, CLLMError)
