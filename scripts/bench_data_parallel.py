"""Step time of data-parallel training on Ray actors vs one process, same global batch.

    python scripts/bench_data_parallel.py [--actors 2] [--steps 10] [--batch-size 16]

Tiny preset (byte vocabulary), T 64. One process with ``--actors`` threads, then a local Ray
cluster with ``--actors`` CPUs and that many one-thread actors (cllm.jobs.data_parallel). Prints
one JSON line: mean seconds per step (forward, backward, gradient sum, clip, AdamW) of each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()

    import numpy as np
    import ray

    from cllm.engine.config import PRESETS
    from cllm.engine.model import GPT
    from cllm.engine.optim import AdamW, clip_grad_norm
    from cllm.jobs.data_parallel import DataParallelGPT, start_actors

    cfg = replace(PRESETS["tiny"], vocab_size=257)
    rng = np.random.default_rng(0)
    B, T = args.batch_size, 64
    batches = [rng.integers(0, 257, (B, T + 1), dtype=np.int32) for _ in range(args.steps + 2)]

    def timed(gpt) -> float:
        opt = AdamW.for_model(gpt, lr=1e-3)
        times = []
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            gpt.forward(b[:, :-1], b[:, 1:])
            gpt.backward()
            clip_grad_norm(gpt.grads, 1.0)
            opt.step(gpt.params, gpt.grads, 1e-3)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        return float(np.mean(times))

    one = timed(GPT(cfg, seed=0, threads=args.actors))
    root = str(ROOT)
    ray.init(
        num_cpus=args.actors,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": root}},
    )
    gpt = GPT(cfg, seed=0)
    dp = DataParallelGPT(gpt, start_actors(cfg, args.actors))
    dp_time = timed(dp)
    ray.shutdown()
    print(
        json.dumps(
            {
                "batch": [B, T],
                "actors": args.actors,
                "one_process_s": round(one, 4),
                "data_parallel_s": round(dp_time, 4),
                "params": gpt.n_params,
                "load": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
