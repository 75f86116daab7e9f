"""Throughput of the job scheduler: K tiny-preset jobs run N at once vs one after another.

    python scripts/bench_jobs.py [--jobs 4] [--workers 2] [--steps 60] [--rounds 1]

Makes a tiny-preset model (BPE tokenizer and queue from the project's own text) in a temporary
models folder and K copies of it, then times, on fresh copies each time, in alternating order:
``jobs run --workers 1`` (one job after another, each with every core's threads) and
``jobs run --workers N`` (N at once, cores / N threads each). Wall time includes each worker
process's start (imports, model load). Prints one JSON line per phase and a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def isa() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.machine()
    have = [f for f in ("avx2", "fma", "avx512f") if f in flags]
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        platform.processor(),
    )
    return f"{model}; {'+'.join(have) or 'no AVX2'}"


def load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()

    from cllm.data.corpus import demo_corpus
    from cllm.jobs.scheduler import cpu_count
    from cllm.jobs.store import JobStore
    from cllm.models.registry import Registry

    tmp = Path(tempfile.mkdtemp(prefix="cllm-bench-jobs-"))
    try:
        base = Registry(tmp / "base")
        text = demo_corpus()
        base.create("m", preset="tiny", text=text, train={"batch_size": 8, "seq_len": 64})
        dq = base.queue("m")
        dq.add_text(text, source="demo corpus")
        dq.close()
        results = {}
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        order = []
        for _ in range(args.rounds):
            order += [1, args.workers]
        for workers in order:
            folder = tmp / f"run-{workers}-{len(results)}"
            reg = Registry(folder)
            names = [f"j{i}" for i in range(args.jobs)]
            for n in names:
                base.export("m", tmp / "m.cllm")
                reg.import_file(tmp / "m.cllm", name=n)
                reg.queue(n).import_from(base.queue("m"))
            JobStore(folder).add(reg, names, steps=args.steps)
            la = load()
            t0 = time.monotonic()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cllm",
                    "jobs",
                    "run",
                    "--workers",
                    str(workers),
                    "--models-dir",
                    str(folder),
                ],
                env=env,
                check=True,
                stderr=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            wall = time.monotonic() - t0
            jobs = JobStore(folder).list()
            assert all(j.state == "done" for j in jobs), [j.reason for j in jobs]
            tokens = sum(j.tokens for j in jobs)
            line = {
                "workers": workers,
                "threads_per_job": max(1, cpu_count() // workers),
                "jobs": args.jobs,
                "steps": args.steps,
                "wall_s": round(wall, 2),
                "tokens": tokens,
                "tokens_per_s": round(tokens / wall, 1),
                "job_seconds": [round(j.seconds, 2) for j in jobs],
                "load_before": round(la, 2),
                "load_after": round(load(), 2),
            }
            print(json.dumps(line), flush=True)
            results.setdefault(workers, []).append(wall)
        serial = min(results[1])
        par = min(results[args.workers])
        print(
            json.dumps(
                {
                    "serial_wall_s": round(serial, 2),
                    "parallel_wall_s": round(par, 2),
                    "speedup": round(serial / par, 3),
                    "cores": cpu_count(),
                    "isa": isa(),
                }
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
