"""The machine the engine's kernels run on: the CPU by name and the widest vector ISA it
offers, printed beside every figure (the figures depend on both)."""

from __future__ import annotations

import os
import platform


def machine() -> dict:
    """The CPU by name and the widest vector ISA it offers (the figures depend on both)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() == "model name" and name in ("", platform.machine()):
                    name = val.strip()
                elif key.strip() == "flags":
                    flags = set(val.split())
                    break
    except OSError:
        pass
    isa = [x for x in ("avx512f", "avx2", "fma", "avx", "sse4_2", "neon") if x in flags]
    out = {"cpu": name, "isa": "+".join(isa[:2]) if isa else platform.machine()}
    if os.environ.get("NUMBA_CPU_NAME"):
        out["numba_cpu"] = os.environ["NUMBA_CPU_NAME"]
    return out
