"""The quality cost of int8 decoding: a small char model trained here, its validation loss with
float32 weights and with the weights int8 decoding uses (one scale per output channel).

    python scripts/quant_quality.py [--steps 1000] [--text FILE]

The text is quality_run.py's (this machine's Vim manual and licence texts) unless --text is
given. The quantised model's loss is the float forward of its dequantised weights, which is what
the int8 kernels compute (tests/cllm/engine/test_quant.py checks that they agree); the check at
the end runs the int8 decoder itself on a validation window against that forward. Prints one JSON
line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from quality_run import default_text  # noqa: E402

from cllm.cli.bench import cpu_count, machine, set_threads  # noqa: E402
from cllm.engine.config import GPTConfig  # noqa: E402
from cllm.engine.model import GPT  # noqa: E402
from cllm.engine.optim import AdamW, clip_grad_norm, lr_at  # noqa: E402
from cllm.engine.quant import FORMATS, dequantized_params  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text", help="a UTF-8 text file (default: this machine's docs)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-batches", type=int, default=50)
    ap.add_argument("--threads", type=int, default=cpu_count())
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    text = open(args.text, encoding="utf-8").read() if args.text else default_text()[0]
    if len(text) < 10_000:
        sys.exit("error: under 10,000 characters of text found; pass --text FILE")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int32)
    n = int(0.9 * len(data))
    train, val = data[:n], data[n:]
    B, T = 12, 64
    cfg = GPTConfig(vocab_size=len(chars), n_embd=128, n_layer=4, n_head=4, block_size=T)
    info = set_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    offsets = rng.integers(0, len(train) - T - 1, (args.steps, B))
    val_offsets = rng.integers(0, len(val) - T - 1, (args.eval_batches, B))

    def batch(src, offs):
        xy = np.stack([src[o : o + T + 1] for o in offs])
        return xy[:, :-1], xy[:, 1:]

    gpt = GPT(cfg, seed=args.seed)
    opt = AdamW.for_model(gpt, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    t0 = time.perf_counter()
    for step in range(args.steps):
        gpt.forward(*batch(train, offsets[step]))
        gpt.backward()
        clip_grad_norm(gpt.grads, 1.0)
        opt.step(gpt.params, gpt.grads, lr=lr_at(step, args.steps, 100, 1e-3, 1e-4))
    train_s = time.perf_counter() - t0

    out = {"bench": "quant_quality", "steps": args.steps, "train_s": round(train_s, 1)}
    trained = gpt.params.copy()
    losses = {}
    for fmt in FORMATS:
        gpt.params[:] = dequantized_params(cfg, trained, fmt)
        losses[fmt] = float(np.mean([gpt.forward(*batch(val, o)) for o in val_offsets]))
        out[f"val_loss_{fmt}"] = round(losses[fmt], 5)
        out[f"val_loss_{fmt}_vs_float32"] = round(losses[fmt] / losses["none"] - 1, 5)
    # the int8 decoder itself, token by token, against the forward of the dequantised weights
    x, _ = batch(val, val_offsets[0][:1])
    full = gpt.forward(x)[0]  # gpt holds the int8-dequantised weights from the loop above
    gpt.params[:] = trained
    gpt.set_quant("int8")
    cache = gpt.new_cache(1)
    steps = np.concatenate([gpt.decode(x[:, t : t + 1], cache)[0] for t in range(T)])
    out["int8_decoder_max_abs_diff"] = float(np.abs(steps - full).max())
    out.update(config=cfg.to_dict(), **info)
    out.update(machine())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
