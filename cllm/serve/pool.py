"""Models loaded for serving, each with one decoding thread that takes turns between requests.

``ModelPool.get(name)`` gives the ``ModelWorker`` of the model's current file: it stats the file on
every request and, when the file changed (a trainer saved a checkpoint, a model was re-created),
loads the new one for new requests while the old worker finishes the requests it already has.
So a model in training is served from its last saved file and follows it without a restart.

A worker decodes its requests together on one thread, with continuous batching
(``engine.batch.BatchDecoder``): each request holds a key-value cache slot, every step gives each
active request its next token in one model call (the weights are read once for all of them), a
finished request leaves its slot between steps and a waiting one takes it. So eight streams to
one model all make progress at once, none waits for another to finish, and the event loop never
runs model code. A ``Generation`` of another model (anything not of the worker's own weights) is
iterated one token per round beside the batch instead.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from cllm.engine.batch import BatchDecoder
from cllm.engine.chat import Generation
from cllm.errors import NotFoundError


@dataclass(eq=False)  # compared by identity
class Job:
    """One request's generation. ``emit(piece)`` and ``finish(error)`` are called on the worker
    thread; setting ``cancel`` (a client went away) ends the generation at its next token."""

    gen: object  # a cllm.engine.chat.Generation, or a callable lm -> Generation
    emit: Callable[[str], None]
    finish: Callable[[BaseException | None], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    _it: object = None  # the iterator of a generation decoded alone
    _sid: int | None = None  # the stream of a generation in the worker's batch


class ModelWorker:
    MAX_ACTIVE = 16  # requests decoded at once (cache slots); more wait in the queue

    def __init__(self, name: str, lm, stamp: tuple) -> None:
        self.name, self.lm, self.stamp = name, lm, stamp
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._active: list[Job] = []
        self._batch: BatchDecoder | None = None  # made at the first request (its cache)
        self._streams: dict[int, Job] = {}  # the batch's stream id -> its job
        self._retired = False
        self.served = 0
        self.steps = 0  # batched steps run (each one token for every stream in the batch)
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
            self._step_batch()
            for job in [j for j in self._active if j._it is not None]:
                self._step(job)

    def _start(self, job: Job) -> None:
        if job.cancel.is_set():  # its client left while it waited
            _tell(job, None)
            return
        _blas_one_thread()  # (again, if someone raised it since: a ctypes call)
        try:
            if callable(job.gen):
                job.gen = job.gen(self.lm)
            gen = job.gen
            if isinstance(gen, Generation) and gen.gpt is self.lm.gpt:
                if self._batch is None:
                    self._batch = BatchDecoder(self.lm.gpt, self.MAX_ACTIVE)
                job._sid = self._batch.add(gen.ids, **gen.sample_args())  # runs the prompt
                gen.start()
                self._streams[job._sid] = job
            else:
                job._it = iter(gen)
            self._active.append(job)
        except BaseException as err:  # a bad request: its own error, the worker goes on
            _tell(job, err)

    def _step_batch(self) -> None:
        """One token for every request in the batch, in one model call."""
        dec = self._batch
        if dec is None or not self._streams:
            return
        for sid, job in list(self._streams.items()):
            if job.cancel.is_set() or (job.gen.cancel is not None and job.gen.cancel.is_set()):
                dec.cancel(sid)
                self._done(job, None)
        if not self._streams:
            return
        try:
            events = dec.step()
        except BaseException as err:  # the model failed: every stream in the step with it
            self._batch = None
            for job in list(self._streams.values()):
                self._done(job, err)
            return
        self.steps += 1
        for ev in events:
            job = self._streams[ev.stream]
            try:
                piece = job.gen.feed(ev.token) if ev.token is not None else ""
                if piece:
                    job.emit(piece)
            except BaseException as err:  # its own failure (or its client's loop closed)
                dec.cancel(ev.stream)
                self._done(job, err)
                continue
            if job.gen.stopped and not ev.done:  # a stop sequence: it leaves the batch now
                dec.cancel(ev.stream)
            if ev.done or job.gen.stopped:
                self._done(job, None)

    def _done(self, job: Job, err: BaseException | None) -> None:
        """A batched job ends: the text it held back, then its finish."""
        self._streams.pop(job._sid, None)
        if err is None:
            try:
                tail = job.gen.end()
                if tail:
                    job.emit(tail)
                self.served += 1
            except BaseException as e:
                err = e
        self._active.remove(job)
        _tell(job, err)

    def _step(self, job: Job) -> None:
        """Advance a job decoded alone by one token."""
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
        _tell(job, err)


def _tell(job: Job, err: BaseException | None) -> None:
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
