"""Frame times of the studio while the job scheduler trains N models in other processes.

    python scripts/frames_while_jobs.py [--jobs 2] [--frames 900] [--size 1600x900]

Makes N tiny-preset models (BPE vocabulary 2,048, D 128, L 4, H 4; B 8, T 64; the project's own
text) in a temporary models folder, queues a long job for each, starts ``python -m cllm jobs run
--workers N`` (each job its own process, cores / N threads), opens the studio on that folder with
the first model selected (its Training tab shows the scheduler's run live, from the progress
file), and renders ``--frames`` frames at 60 fps. Prints one JSON line: frame-time percentiles,
frames drawn, each job's steps during the measurement, the CPU and ISA, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--frames", type=int, default=900)
    p.add_argument("--size", default="1600x900")
    args = p.parse_args()
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

    from app.studio import FPS, Studio, frame_stats, parse_size, wait
    from cllm.data.corpus import demo_corpus
    from cllm.engine.machine import machine
    from cllm.jobs.store import JobStore
    from cllm.models.registry import Registry
    from cllm.train.trainer import read_progress

    tmp = Path(tempfile.mkdtemp(prefix="cllm-frames-jobs-"))
    sched = None
    studio = None
    try:
        reg = Registry(tmp)
        text = demo_corpus()
        names = [f"job{i}" for i in range(args.jobs)]
        for n in names:
            reg.create(n, preset="tiny", text=text, train={"batch_size": 8, "seq_len": 64})
            dq = reg.queue(n)
            dq.add_text(text, source="demo corpus")
            dq.close()
        JobStore(tmp).add(reg, names, steps=1_000_000)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "cllm", "jobs", "run", "--workers", str(args.jobs)]
        sched = subprocess.Popen(
            [*cmd, "--models-dir", str(tmp)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def steps() -> list[int]:
            return [getattr(read_progress(tmp, n), "step", 0) for n in names]

        end = time.monotonic() + 180
        while min(steps()) < 5 and time.monotonic() < end:  # every job past its start
            time.sleep(0.5)
        studio = Studio(parse_size(args.size), tmp, demo=False)
        st = studio.st
        wait(studio, lambda: st.listed, 30)
        st.select(names[0])
        studio.switch(1)  # the Training tab: the scheduler's run of the selected model, live
        wait(studio, lambda: st.snapshot is not None, 30)
        studio.frame_ms.clear()
        before, t0 = steps(), time.monotonic()
        for _ in range(args.frames):
            studio.step()
            studio.clock.tick(FPS)
        seconds, after = time.monotonic() - t0, steps()
        print(
            json.dumps(
                {
                    "jobs": args.jobs,
                    "frames": args.frames,
                    "size": args.size,
                    **frame_stats(studio.frame_ms),
                    "seconds": round(seconds, 1),
                    "job_steps_during": [b - a for a, b in zip(before, after, strict=True)],
                    "shown_step": getattr(st.snapshot, "step", None),
                    **machine(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                }
            )
        )
    finally:
        if studio is not None:
            studio.close()
        if sched is not None:
            os.killpg(sched.pid, signal.SIGINT)  # the scheduler stops its jobs with checkpoints
            try:
                sched.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(sched.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
