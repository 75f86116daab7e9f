"""nanoGPT's CPU recipe, run by our engine and by the PyTorch reference on the same text.

Char-level, D 128, L 4, H 4, T 64, B 12, 2000 steps, lr 1e-3 with 100 warmup steps and cosine
decay to 1e-4, AdamW betas 0.9/0.99, weight decay 0.1, clip 1.0, last 10% of the text held out.
Both engines start from the same weights and see the same batches; they train in alternating
blocks in one process so that the machine's other load falls on both. Validation loss is the mean
over the same fixed validation batches for both.

    python scripts/quality_run.py [--text FILE] [--steps 2000] [--threads 2]

With no --text, the text is this machine's English documentation: the Vim user manual
(usr_*.txt) and the licence texts in /usr/share/common-licenses, about 1 MB.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cllm.cli.bench import cpu_count, set_threads  # noqa: E402
from cllm.engine import torch_ref  # noqa: E402
from cllm.engine.config import GPTConfig  # noqa: E402
from cllm.engine.model import GPT  # noqa: E402
from cllm.engine.optim import AdamW, clip_grad_norm, lr_at  # noqa: E402

SOURCES = ["/usr/share/vim/vim9*/doc/usr_*.txt", "/usr/share/common-licenses/*"]


def default_text() -> tuple[str, list[str]]:
    paths, seen = [], set()
    for pattern in SOURCES:
        for p in sorted(glob.glob(pattern)):
            real = os.path.realpath(p)  # the licence folder links GPL -> GPL-3 and so on
            if os.path.isfile(real) and real not in seen:
                seen.add(real)
                paths.append(p)
    text = "".join(open(p, encoding="utf-8", errors="replace").read() for p in paths)
    return text, paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text", help="a UTF-8 text file (default: this machine's docs, see above)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-batches", type=int, default=50)
    ap.add_argument("--block", type=int, default=50, help="steps per alternating block")
    ap.add_argument("--threads", type=int, default=cpu_count())
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()

    if args.text:
        text, paths = open(args.text, encoding="utf-8").read(), [args.text]
    else:
        text, paths = default_text()
    if len(text) < 10_000:
        sys.exit("error: under 10,000 characters of text found; pass --text FILE")
    chars = sorted(set(text))  # nanoGPT's char-level vocabulary
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int32)
    n = int(0.9 * len(data))
    train, val = data[:n], data[n:]
    print(
        f"text: {len(text):,} chars, {len(chars)} distinct, sha256 "
        f"{hashlib.sha256(text.encode()).hexdigest()[:16]}, from {len(paths)} files",
        flush=True,
    )

    B, T = 12, 64
    cfg = GPTConfig(vocab_size=len(chars), n_embd=128, n_layer=4, n_head=4, block_size=T)
    info = set_threads(args.threads)
    import torch

    torch.set_num_threads(info["threads"])  # the same count for both
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    offsets = rng.integers(0, len(train) - T - 1, (args.steps, B))
    val_offsets = rng.integers(0, len(val) - T - 1, (args.eval_batches, B))

    def batch(src: np.ndarray, offs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xy = np.stack([src[o : o + T + 1] for o in offs])
        return xy[:, :-1], xy[:, 1:]

    gpt = GPT(cfg, seed=args.seed)
    ref = torch_ref.from_flat(cfg, gpt.params)
    opt = AdamW.for_model(gpt, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    ref_opt = torch_ref.make_optimizer(ref, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    lr = [lr_at(s, args.steps, 100, 1e-3, 1e-4) for s in range(args.steps)]

    def ours(step: int) -> float:
        loss = gpt.forward(*batch(train, offsets[step]))
        gpt.backward()
        clip_grad_norm(gpt.grads, 1.0)
        opt.step(gpt.params, gpt.grads, lr=lr[step])
        return loss

    def theirs(step: int) -> float:
        return torch_ref.train_step(ref, ref_opt, *batch(train, offsets[step]), lr=lr[step])[0]

    def val_loss(engine: str) -> float:
        losses = []
        for offs in val_offsets:
            x, y = batch(val, offs)
            if engine == "ours":
                losses.append(gpt.forward(x, y))
            else:
                with torch.no_grad():
                    losses.append(ref(torch.from_numpy(x), torch.from_numpy(y)).item())
        return float(np.mean(losses))

    engines = {"ours": ours, "torch": theirs}
    secs, last = dict.fromkeys(engines, 0.0), {}
    step = 0
    while step < args.steps:
        n_block = min(args.block, args.steps - step)
        order = list(engines) if (step // args.block) % 2 == 0 else list(engines)[::-1]
        for name in order:
            t0 = time.perf_counter()
            for s in range(step, step + n_block):
                last[name] = engines[name](s)
            secs[name] += time.perf_counter() - t0
            time.sleep(0.05)  # let the other engine's spinning threads go idle
        step += n_block
        if step % args.eval_every == 0 or step == args.steps:
            vl = {k: val_loss(k) for k in engines}
            print(
                f"step {step:5d}  train {last['ours']:.4f} / torch {last['torch']:.4f}  "
                f"val {vl['ours']:.4f} / torch {vl['torch']:.4f}  "
                f"time {secs['ours']:.1f}s / torch {secs['torch']:.1f}s",
                flush=True,
            )
    out = {
        "val_loss": round(vl["ours"], 4),
        "torch_val_loss": round(vl["torch"], 4),
        "val_rel_diff": round((vl["ours"] - vl["torch"]) / vl["torch"], 4),
        "seconds": round(secs["ours"], 1),
        "torch_seconds": round(secs["torch"], 1),
        "steps": args.steps,
        "chars": len(text),
        "vocab": len(chars),
        "sources": [p if args.text else os.path.basename(p) for p in paths][:3] + ["..."],
        **info,
        "load_avg_end": os.getloadavg(),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
