"""Models loaded for serving, each with one decoding thread that takes turns between requests.

``ModelPool.get(name)`` gives the ``ModelWorker`` of the model's current file: it stats the file on
every request and, when the file changed (a trainer saved a checkpoint, a model was re-created),
loads the new one for new requests while the old worker finishes the requests it already has.
So a model in training is served from its last saved file and follows it without a restart.

A worker runs its requests' ``Generation`` iterators round-robin, one step (one token, with any
text it completes) each, on one thread: eight streams to one model all make progress at once,
none waits for another to finish, and the event loop never runs model code. Batched decoding
plugs in at ``ModelWorker._step``: instead of advancing each job by one ``decode`` of batch 1,
advance them all with one batched decode over their KV caches.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from cllm.errors import NotFoundError


@dataclass(eq=False)  # compared by identity
class Job:
    """One request's generation. ``emit(piece)`` and ``finish(error)`` are called on the worker
    thread; setting ``cancel`` (a client went away) ends the generation at its next token."""

    gen: object  # a cllm.engine.chat.Generation, or a callable lm -> Generation
    emit: Callable[[str], None]
    finish: Callable[[BaseException | None], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    _it: object = None


class ModelWorker:
    MAX_ACTIVE = 16  # requests decoded in turn; more wait in the queue

    def __init__(self, name: str, lm, stamp: tuple) -> None:
        self.name, self.lm, self.stamp = name, lm, stamp
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._active: list[Job] = []
        self._retired = False
        self.served = 0
        self._thread = threading.Thread(target=self._run, name=f"cllm-serve-{name}", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def retire(self) -> None:
        """Finish what is queued and running, then stop the thread."""
        self._queue.put(None)

    @property
    def busy(self) -> int:
        return len(self._active) + self._queue.qsize()

    def _run(self) -> None:
        while True:
            block = not self._active
            while len(self._active) < self.MAX_ACTIVE:
                try:
                    job = self._queue.get(block=block)
                except queue.Empty:
                    break
                block = False
                if job is None:
                    self._retired = True
                    continue
                self._start(job)
            if not self._active:
                if self._retired:
                    return
                continue
            for job in list(self._active):
                self._step(job)

    def _start(self, job: Job) -> None:
        if job.cancel.is_set():  # its client left while it waited
            try:
                job.finish(None)
            except RuntimeError:  # the event loop is gone
                pass
            return
        _blas_one_thread()  # (again, if someone raised it since: a ctypes call)
        try:
            if callable(job.gen):
                job.gen = job.gen(self.lm)
            job._it = iter(job.gen)
            self._active.append(job)
        except BaseException as err:  # a bad request: its own error, the worker goes on
            try:
                job.finish(err)
            except RuntimeError:  # the event loop is gone
                pass

    def _step(self, job: Job) -> None:
        """Advance one job by one token (where batched decoding would advance all at once)."""
        try:
            piece = next(job._it)
            if piece:
                job.emit(piece)
            return
        except StopIteration:
            err = None
            self.served += 1
        except BaseException as e:  # its own failure (or its client's loop closed): not ours
            err = e
        self._active.remove(job)
        try:
            job.finish(err)
        except RuntimeError:  # the event loop is gone (the server stopped): nobody to tell
            pass


_BLAS: list | None = None


def _blas_one_thread() -> None:
    """The prompt's prefill multiplies matrices with NumPy's BLAS. With its default thread per
    core, those threads spin against the event loop, the other models' workers and anything else
    on the machine: a 32-token prefill of the small preset measured 100-3000 ms on a loaded
    2-core machine, against 28-38 ms single-threaded. Serving many streams, one thread each is
    right (as the engine's training does per batch slice)."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController().select(internal_api="openblas").lib_controllers
        except Exception:  # no threadpoolctl, or it cannot see the BLAS: leave BLAS as it is
            _BLAS = []
    for lib in _BLAS:
        if lib.get_num_threads() != 1:
            lib.set_num_threads(1)


def _stamp(path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ModelPool:
    """Up to ``keep`` models in memory, the least recently used dropped first."""

    def __init__(self, registry, keep: int = 4) -> None:
        self.registry, self.keep = registry, keep
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._workers: OrderedDict[str, ModelWorker] = OrderedDict()
        self.reloads = 0

    def get(self, name: str) -> ModelWorker:
        """Blocking (loads from disk): call it off the event loop. ``NotFoundError`` if no such
        model."""
        name = self.registry.resolve(name)
        path = self.registry.path(name)
        with self._lock:
            load_lock = self._loading.setdefault(name, threading.Lock())
        with load_lock:  # one load of a model at a time; others wait for it
            stamp = _stamp(path)
            if stamp is None:
                raise NotFoundError(f"no model named {name!r}")
            with self._lock:
                w = self._workers.get(name)
                if w is not None and w.stamp == stamp:
                    self._workers.move_to_end(name)
                    return w
            lm = self.registry.load(name)
            lm.check_finite("be served")
            # the file may have been replaced while it was read: the stamp of what was read is
            # unknown then, and the next request simply loads again
            after = _stamp(path)
            w = ModelWorker(name, lm, stamp if after == stamp else ("reread",))
            with self._lock:
                old = self._workers.pop(name, None)
                if old is not None:
                    old.retire()
                    self.reloads += 1
                self._workers[name] = w
                while len(self._workers) > self.keep:
                    _, gone = self._workers.popitem(last=False)
                    gone.retire()
            return w

    def loaded(self) -> dict[str, ModelWorker]:
        with self._lock:
            return dict(self._workers)

    def close(self) -> None:
        with self._lock:
            for w in self._workers.values():
                w.retire()
            self._workers.clear()


def wait_idle(workers, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(w.busy == 0 for w in workers):
            return True
        time.sleep(0.01)
    return False
