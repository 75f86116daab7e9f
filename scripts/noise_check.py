"""Train-loss noise on the demo queue: the sequential stream against random windows.

Two copies of the studio's demo model (tiny preset, BPE tokenizer trained on this repository's
docs and source, which are its queue's one item) start from the same weights and train
the same number of steps, one with ``sampling = sequential``, one with ``random``. Printed for
each: the standard deviation and the largest absolute value of the step-to-step change of the
training loss over the second half of the run (after the fast initial descent), and the final
validation loss (the same fixed batches for both).

    python scripts/noise_check.py [--steps 600]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cllm.data.corpus import demo_corpus  # noqa: E402
from cllm.models.registry import Registry  # noqa: E402
from cllm.train.trainer import Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    reg = Registry(Path(tempfile.mkdtemp(prefix="noise-")) / "models")
    text = demo_corpus()  # as the studio makes its demo model (app.state.create_demo)
    reg.create("seq", preset="tiny", text=text, target_epochs=20, train={"sampling": "sequential"})
    with reg.queue("seq") as q:
        q.add_text(text, source="demo corpus (the project's docs and source)")
    reg.copy("seq", "rnd")
    reg.set_settings("rnd", sampling="random")
    out = {}
    for name in ("seq", "rnd"):
        t = Trainer(reg, name, max_steps=args.steps)
        t.start()
        t.join()
        snap = t.snapshot()
        loss = np.asarray(snap.history["train"], np.float64)
        d = np.diff(loss[len(loss) // 2 :])
        out[reg.info(name).train.sampling] = {
            "step_change_std": round(float(d.std()), 4),
            "step_change_max": round(float(np.abs(d).max()), 4),
            "final_train_loss": round(float(loss[-1]), 4),
            "val_loss": None if snap.val_loss is None else round(snap.val_loss, 4),
            "batches_per_epoch": snap.batches_per_epoch,
        }
        print(name, json.dumps(out[reg.info(name).train.sampling]), flush=True)
    print(json.dumps({"steps": args.steps, **out, "load_avg": os.getloadavg()}))


if __name__ == "__main__":
    main()
