"""Frame times of the studio while it adds a large folder to a model's queue.

    python scripts/frames_while_adding.py [--mb 100] [--size 1600x900]

Generates the mixed folder of ``python -m cllm bench ingest`` (plain text, HTML, Markdown,
JSONL, CSV, PDF, archives) in a temporary place, makes a tiny model, opens the studio on the
Training tab and drops the folder on it (the add runs in the studio's worker thread while the
tab shows its progress), rendering at 60 fps until the add ends. Prints one JSON line: the
frame-time percentiles during the add, the add's MB/s and tokens, the CPU and ISA.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=float, default=100.0)
    p.add_argument("--size", default="1600x900")
    args = p.parse_args()
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

    from app.studio import FPS, Studio, frame_stats, parse_size, wait
    from cllm.data.bench import make_mixed_folder
    from cllm.data.corpus import demo_corpus
    from cllm.engine.machine import machine
    from cllm.models.registry import Registry

    tmp = Path(tempfile.mkdtemp(prefix="cllm-frames-add-"))
    studio = None
    try:
        folder = tmp / "docs"
        make_mixed_folder(folder, args.mb)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        models = tmp / "models"
        Registry(models).create("m", preset="tiny", text=demo_corpus())
        studio = Studio(parse_size(args.size), models, demo=False)
        st = studio.st
        wait(studio, lambda: st.listed and st.current == "m" and not studio.worker.busy, 60)
        studio.switch(1)  # the Training tab: TRAINING DATA shows the add's progress
        studio.pump(2)
        studio.frame_ms.clear()
        t0 = time.monotonic()
        st.add_to_queue([str(folder)], "m")
        while st.adding is not None or studio.worker.busy:
            studio.step()
            studio.clock.tick(FPS)
        seconds = time.monotonic() - t0
        print(
            json.dumps(
                {
                    "MB": round(size / 1e6, 1),
                    "seconds": round(seconds, 1),
                    "MB_per_s": round(size / 1e6 / seconds, 2),
                    "queue_tokens": st.info("m").queue_tokens,
                    **frame_stats(studio.frame_ms),
                    "size": args.size,
                    **machine(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                }
            )
        )
    finally:
        if studio is not None:
            studio.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
