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


def run_parallel(fn, items: list, group: str = "gpt") -> list:
    """fn(item) for every item: the first on this thread, the rest on a worker pool whose threads
    run at this thread's priority (a niced trainer's slices never run at the window's). Each
    ``group`` has its own pools: items that meet at barriers (a decode step's parts, "step")
    never wait in a queue behind another group's work while their partner spins."""
    if len(items) == 1:
        return [fn(items[0])]
    key = (group, thread_nice())
    nice = key[1]
    if _POOL_SIZES.get(key, 0) < len(items) - 1:
        _POOLS[key] = ThreadPoolExecutor(
            max_workers=len(items) - 1,
            thread_name_prefix=f"cllm-{group}{nice:+d}" if nice else f"cllm-{group}",
            initializer=lower_priority if nice else None,
            initargs=(nice,) if nice else (),
        )
        _POOL_SIZES[key] = len(items) - 1
    pool = _POOLS[key]
    futures = [pool.submit(fn, it) for it in items[1:]]
    first = fn(items[0])
    return [first] + [f.result() for f in futures]


def chunks(n: int, parts: int) -> list[slice]:
    """[0, n) cut into ``parts`` nearly equal ranges."""
    return [slice(n * i // parts, n * (i + 1) // parts) for i in range(parts)]
