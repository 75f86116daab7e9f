"""The matrix product routine of NumPy's own BLAS, for numba kernels to call directly.

The fused attention (``kernels.attention_flash_forward`` and ``_backward``) runs thousands of
small products a step, each on a block of scores that must stay in the core's cache. From Python
each would cost a call of a few microseconds and could not add into its output (np.matmul has no
``beta``); from inside a kernel, through the routine's address, a call costs nothing more than
the routine itself. The routine is OpenBLAS's ``cblas_sgemm`` / ``cblas_dgemm``, which NumPy's
wheels bundle (named ``scipy_cblas_sgemm64_`` there: 64-bit integers). Where NumPy runs on another
BLAS (Accelerate, MKL), ``gemm`` answers None and the engine takes its NumPy-only path.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)

# name affixes of OpenBLAS's exported symbols: plain, and those of builds that rename them
# (scipy-openblas, which NumPy bundles: scipy_ ... 64_; other ILP64 builds: ... 64_ or ... _64)
_PREFIXES = ("", "scipy_")
_SUFFIXES = ("", "64_", "_64")


class Gemm(NamedTuple):
    # of cblas_?gemm(order, transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
    address: int
    wide: bool  # its integer arguments are 64-bit (an ILP64 build)


@functools.cache
def gemm(dtype) -> Gemm | None:
    """cblas_sgemm (float32) or cblas_dgemm (float64) of the OpenBLAS NumPy has loaded, or None
    where there is none to be found."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        return None
    letter = "s" if dtype == np.float32 else "d"
    try:
        from threadpoolctl import ThreadpoolController

        libs = ThreadpoolController().select(internal_api="openblas").lib_controllers
    except Exception as e:  # noqa: BLE001  (whatever goes wrong, the NumPy-only path works)
        log.info("no direct BLAS calls: %s", e)
        return None
    for lib in libs:
        try:
            dll = ctypes.CDLL(lib.filepath)
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                fn = getattr(dll, f"{prefix}cblas_{letter}gemm{suffix}", None)
                config = getattr(dll, f"{prefix}openblas_get_config{suffix}", None)
                if fn is None or config is None:
                    continue
                config.restype = ctypes.c_char_p
                wide = b"USE64BITINT" in (config() or b"")
                return Gemm(ctypes.cast(fn, ctypes.c_void_p).value, wide)
    return None
