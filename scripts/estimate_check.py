"""The cost estimate against a measured run, on the tiny and small presets.

For each preset: a model is created in a temporary folder with this repository's docs and source
as its queue; ``python -m cllm.train NAME --dry-run --steps N --json`` (a child process, which
probes the shape) gives the estimate; then ``python -m cllm.train NAME --steps N --json`` (another
child) trains. Its training time is the ``seconds`` of its JSON line (the run, without start-up);
its peak RSS is the child's ``ru_maxrss`` from ``os.wait4`` (the kernel's high-water mark of the
process's resident memory, start-up included).

    python scripts/estimate_check.py [--steps-tiny 400] [--steps-small 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_child(args: list[str]) -> tuple[dict, int, str]:
    """As ``child``, but reaps the process itself so ``ru_maxrss`` is this child's alone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "cllm.train", *args], stdout=out, stderr=err, env=env
        )
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        o, e = out.read(), err.read()
    if p.returncode != 0:
        sys.exit(f"child failed ({p.returncode}): {e[-2000:]}")
    line = [x for x in o.splitlines() if x.startswith("{")][-1]
    return json.loads(line), usage.ru_maxrss * 1024, e


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps-tiny", type=int, default=400)
    ap.add_argument("--steps-small", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="estimate-"))
    rows = []
    for preset, steps in (("tiny", args.steps_tiny), ("small", args.steps_small)):
        d = str(tmp / preset)
        t0 = time.time()
        create = [preset, "--models-dir", d, "--create", "--preset", preset, "--steps", "1"]
        run_child([*create, "--data", str(ROOT / "docs"), str(ROOT / "cllm"), "--json"])
        dry = [preset, "--models-dir", d, "--dry-run", "--steps", str(steps), "--json"]
        est, _, _ = run_child(dry)
        got, rss, err = run_child([preset, "--models-dir", d, "--steps", str(steps), "--json"])
        row = {
            "preset": preset,
            "steps": steps,
            "batch": f"{got['batch_size']}x{got['seq_len']}",
            "est_seconds": round(est["seconds"], 1),
            "seconds": got["seconds"],
            "time_ratio": round(est["seconds"] / got["seconds"], 3),
            "est_peak_mb": round(est["peak_bytes"] / 1e6, 1),
            "peak_rss_mb": round(rss / 1e6, 1),
            "rss_ratio": round(est["peak_bytes"] / rss, 3),
            "est_runtime_mb": round(est["memory"]["runtime"] / 1e6, 1),
            "load_avg": os.getloadavg(),
            "wall_s": round(time.time() - t0, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
