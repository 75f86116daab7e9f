"""The engine's threads: one worker pool for batch slices, single-threaded BLAS inside it.

The engine shares the cores out by batch slices (training) or by row ranges (the optimizer, the
gradient sum): each thread runs numba kernels and NumPy's BLAS on its own slice, and nothing
spins at a barrier. So BLAS runs one thread per caller, and numba's own thread count is only the
knob that says how many slices to cut.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

# numba's default OpenMP layer would launch a second OpenMP runtime just to answer
# get_num_threads(), and beside torch's (the benchmark's reference, in the same process) torch's
# threaded steps run ~50x slower; the plain workqueue layer costs the engine nothing. Set on
# import of the engine (kernels imports this module) so every entry point agrees.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

_BLAS: list | None = None
_POOLS: dict[tuple, ThreadPoolExecutor] = {}  # one pool per group and priority (nice value)
_POOL_SIZES: dict[tuple, int] = {}


def blas_one_thread() -> None:
    """Pin NumPy's OpenBLAS to one thread (again whenever someone raised it since: a ctypes call,
    ~1 us). PyTorch's own pool, in the benchmark, is left alone."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController().select(internal_api="openblas").lib_controllers
    for lib in _BLAS:
        if lib.get_num_threads() != 1:
            lib.set_num_threads(1)


def default_threads() -> int:
    """As many threads as numba is given (NUMBA_NUM_THREADS, default every core, or
    numba.set_num_threads in this thread)."""
    return numba.get_num_threads()


def thread_nice() -> int:
    """This thread's nice value (Linux keeps one per thread; 0 where that cannot be read)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return 0


def lower_priority(nice: int) -> bool:
    """Lower this thread's CPU priority to ``nice`` (a background trainer beside a window: the
    window's thread gets a core when it wants one, training gets every cycle the window leaves).
    Only this thread, and the engine's workers it hands slices to; False where the OS says no."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(thread_nice(), nice))
    except (AttributeError, OSError):
        return False
    return True


def run_parallel(fn, items: list) -> list:
    """fn(item) for every item: the first on this thread, the rest on a worker pool whose threads
    run at this thread's priority (a niced trainer's slices never run at the window's). Work
    whose parts meet at barriers goes to a ``Team`` instead (``run_team``): it never waits in
    this pool's queue behind other work while its partner spins."""
    if len(items) == 1:
        return [fn(items[0])]
    nice = thread_nice()
    key = ("gpt", nice)
    if _POOL_SIZES.get(key, 0) < len(items) - 1:
        _POOLS[key] = ThreadPoolExecutor(
            max_workers=len(items) - 1,
            thread_name_prefix=f"cllm-gpt{nice:+d}" if nice else "cllm-gpt",
            initializer=lower_priority if nice else None,
            initargs=(nice,) if nice else (),
        )
        _POOL_SIZES[key] = len(items) - 1
    pool = _POOLS[key]
    futures = [pool.submit(fn, it) for it in items[1:]]
    first = fn(items[0])
    return [first] + [f.result() for f in futures]


# A team's helpers wait for the next round this many turns of the CPU's pause hint (33 ns each
# on the 2-core EPYC: about a millisecond) spinning before they sleep, and the caller as long
# for the round's end: the steps of a batched decode, a few hundred microseconds of Python
# apart, need no thread woken from sleep (from a thread pool's queue: 42 us to start the partner
# and 68 to learn it had finished, of a 1.9 ms step). A helper still takes the GIL from the
# caller to start its part (about 60 us); parts that signal their end from compiled code
# (``Team.run(signals=True)``) end without it.
TEAM_SPINS = 30_000
_TEAMS: dict[tuple, Team] = {}


class Team:
    """``parts`` - 1 helper threads that each run fn(part) once a round while the caller runs
    fn(0): for work whose parts meet at spin barriers (a decode step shared out by columns),
    where a partner still waking from sleep keeps the others spinning. Between rounds a helper
    spins a while (``kernels.spin_until``, without the GIL) before it sleeps on a condition;
    the caller waits for the round's end the same way. Rounds run one at a time. Helpers run
    at the priority (nice value) of the thread that made the team."""

    def __init__(self, parts: int, nice: int = 0):
        self.parts = parts
        self.flag = np.zeros(16, np.int64)  # [0] rounds posted, [DONE] parts done (own line)
        self.fn_signals = False
        self._own = np.zeros(16, np.int64)  # what the caller's part signals into (ignored)
        self.cond = threading.Condition()
        self.lock = threading.Lock()
        self.fn = None
        self.errors: list[BaseException | None] = [None] * parts
        for part in range(1, parts):
            name = f"cllm-team{nice:+d}-{part}" if nice else f"cllm-team-{part}"
            threading.Thread(target=self._serve, args=(part, nice), name=name, daemon=True).start()

    def _serve(self, part: int, nice: int) -> None:
        from cllm.engine import kernels as K

        if nice:
            lower_priority(nice)
        seen = 0
        while True:
            if not K.spin_until(self.flag, 0, seen + 1, TEAM_SPINS):
                with self.cond:
                    while self.flag[0] <= seen:
                        self.cond.wait()
            seen += 1
            fn, signals = self.fn, self.fn_signals
            try:
                if signals:
                    fn(part, self.flag)
                else:
                    fn(part)
            except BaseException as e:  # handed to the caller, which raises it
                self.errors[part] = e
                signals = False
            if not signals:
                K.signal(self.flag, self.DONE)
            with self.cond:
                self.cond.notify_all()

    DONE = 8

    def run(self, fn, signals: bool = False):
        """fn(0) here and fn(1)..fn(parts - 1) on the helpers, at once; returns fn(0)'s result
        once every part has ended, or raises the first part's exception.

        ``signals``: fn(part, flag) itself ends with ``kernels.signal(flag, Team.DONE)`` in
        compiled code, and raises only before it: the caller learns that a helper has finished
        without waiting for that helper to take the GIL back (tens of microseconds)."""
        from cllm.engine import kernels as K

        with self.lock:
            self.fn, self.fn_signals = fn, signals
            self.errors = [None] * self.parts
            done = int(self.flag[self.DONE]) + self.parts - 1
            with self.cond:
                K.signal(self.flag, 0)
                self.cond.notify_all()
            try:
                first = fn(0, self._own) if signals else fn(0)
            finally:
                if not K.spin_until(self.flag, self.DONE, done, TEAM_SPINS):
                    with self.cond:
                        while self.flag[self.DONE] < done:
                            self.cond.wait()
            for e in self.errors[1:]:
                if e is not None:
                    raise e
            return first


def run_team(fn, parts: int, signals: bool = False):
    """fn(0)..fn(parts - 1) at once on a ``Team`` of this thread's priority (made on first
    use, then kept); fn(0)'s result. ``signals``: see ``Team.run``."""
    if parts == 1:
        return fn(0, np.zeros(16, np.int64)) if signals else fn(0)
    key = (parts, thread_nice())
    team = _TEAMS.get(key)
    if team is None:
        team = _TEAMS.setdefault(key, Team(parts, key[1]))
    return team.run(fn, signals)


def chunks(n: int, parts: int) -> list[slice]:
    """[0, n) cut into ``parts`` nearly equal ranges."""
    return [slice(n * i // parts, n * (i + 1) // parts) for i in range(parts)]
