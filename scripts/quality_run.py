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
import math
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


def trainer_text(chars: int) -> tuple[str, list[str]]:
    """Exactly ``chars`` characters: this repository's docs and source, then this machine's Vim
    documentation (all of /usr/share/vim/vim9*/doc/*.txt, sorted) until the length is reached."""
    from cllm.data.corpus import demo_corpus

    parts, paths, total = [demo_corpus()], ["docs+source of this repository"], 0
    total = len(parts[0])
    for p in sorted(glob.glob("/usr/share/vim/vim9*/doc/*.txt")):
        if total >= chars:
            break
        t = open(p, encoding="utf-8", errors="replace").read()
        parts.append(t)
        paths.append(p)
        total += len(t)
    text = "".join(parts)[:chars]
    if len(text) < chars:
        sys.exit(f"error: only {len(text):,} characters of local text found, {chars:,} wanted")
    return text, paths


def run_trainer(args) -> None:
    """nanoGPT's recipe through ``cllm.train``'s Trainer (random windows, the model's schedule,
    fixed validation batches) and through a PyTorch loop drawing its own random windows."""
    import tempfile
    from pathlib import Path

    from cllm.engine.model import GPT as _GPT  # noqa: F401  (engine loaded before timing)
    from cllm.models.registry import Registry
    from cllm.train.sampler import TokenSource, validation_batches
    from cllm.train.trainer import Trainer

    B, T, steps, vf = 12, 64, args.steps, 0.1
    # one epoch = `steps` batches: ceil(train tokens / (B * T)) with train tokens = 90% of the text
    chars = math.ceil(steps * B * T / (1 - vf)) - 1
    text, paths = trainer_text(chars)
    info = set_threads(args.threads)
    import torch

    torch.set_num_threads(info["threads"])
    torch.manual_seed(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="quality-"))
    (tmp / "text.txt").write_text(text, encoding="utf-8")
    reg = Registry(tmp / "models")
    settings = dict(
        batch_size=B, seq_len=T, learning_rate=1e-3, min_lr=1e-4, warmup=100, weight_decay=0.1,
        beta1=0.9, beta2=0.99, grad_clip=1.0, val_fraction=vf, seed=args.seed,
        eval_interval=args.eval_every, eval_batches=args.eval_batches, keep_checkpoints=1,
    )  # fmt: skip
    cfg = GPTConfig(vocab_size=2, n_embd=128, n_layer=4, n_head=4, block_size=T)
    reg.create(
        "q",
        config=cfg,
        tokenizer="char",
        vocab_size=4096,
        text=text,
        train=settings,
        target_epochs=1,
    )
    dq = reg.queue("q")
    dq.add_file(tmp / "text.txt")
    (item,) = dq.items()
    tokens = dq.tokens(item.id)
    n_train = item.n_tokens - int(item.n_tokens * vf)
    val_set = validation_batches(
        TokenSource(dq), [(item.id, n_train, item.n_tokens)], 256, B, T, args.eval_batches
    )
    dq.close()
    init = reg.load("q")
    cfg = init.config
    print(
        f"text: {len(text):,} chars ({item.n_tokens:,} char tokens, vocabulary {cfg.vocab_size}), "
        f"sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}, from {len(paths)} sources",
        flush=True,
    )

    # the reference: nanoGPT's get_batch (torch.randint over the training tokens) and its loop
    ref = torch_ref.from_flat(cfg, init.gpt.params)
    opt = torch_ref.make_optimizer(ref, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    data = torch.from_numpy(np.append(tokens[:n_train], np.int32(256)).astype(np.int64))
    gen = torch.Generator().manual_seed(args.seed + 1)

    def ref_val() -> float:
        with torch.no_grad():
            return float(
                np.mean([ref(torch.from_numpy(x), torch.from_numpy(y)).item() for x, y in val_set])
            )

    def ours(n: int) -> None:
        """n steps by cllm's Trainer: a run that stops and is resumed next block (resume is
        exact; the reload and the checkpoint of every block count in our time)."""
        trainer = Trainer(reg, "q", max_steps=n)
        trainer.start()
        trainer.join()
        snap = trainer.snapshot()
        if snap.state != "done":
            sys.exit(f"error: our run ended {snap.state}: {snap.message}")

    def theirs(first: int, n: int) -> None:
        for step in range(first, first + n):
            ix = torch.randint(len(data) - T - 1, (B,), generator=gen)
            xy = torch.stack([data[i : i + T + 1] for i in ix.tolist()])
            lr = lr_at(step, steps, 100, 1e-3, 1e-4)
            torch_ref.train_step(ref, opt, xy[:, :-1].numpy(), xy[:, 1:].numpy(), lr=lr)
            if (step + 1) % args.eval_every == 0 or step + 1 == steps:
                torch_vals[step + 1] = ref_val()  # the same work as our trainer's validation

    # alternating blocks of eval_every steps, so that the machine's other load falls on both
    torch_vals: dict[int, float] = {}
    secs = {"ours": 0.0, "torch": 0.0}
    step = 0
    while step < steps:
        n = min(args.eval_every, steps - step)
        order = ["ours", "torch"] if (step // args.eval_every) % 2 == 0 else ["torch", "ours"]
        for name in order:
            t0 = time.perf_counter()
            ours(n) if name == "ours" else theirs(step, n)
            secs[name] += time.perf_counter() - t0
            time.sleep(0.05)
        step += n
        h = reg.history("q")
        ours_val = float(h["val_loss"][-1])
        print(
            f"step {step:5d}  val {ours_val:.4f} / torch {torch_vals[step]:.4f}  "
            f"train {h['train_loss'][-1]:.4f}  time {secs['ours']:.1f}s / torch "
            f"{secs['torch']:.1f}s  load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    ours_s, torch_s = secs["ours"], secs["torch"]
    torch_val = torch_vals[steps]
    out = {
        "val_loss": round(ours_val, 4),
        "torch_val_loss": round(torch_val, 4),
        "val_rel_diff": round((ours_val - torch_val) / torch_val, 4),
        "seconds": round(ours_s, 1),
        "torch_seconds": round(torch_s, 1),
        "steps": steps,
        "chars": len(text),
        "vocab": cfg.vocab_size,
        **info,
        "load_avg_end": os.getloadavg(),
    }
    print(json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text", help="a UTF-8 text file (default: this machine's docs, see above)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-batches", type=int, default=50)
    ap.add_argument("--block", type=int, default=50, help="steps per alternating block")
    ap.add_argument("--threads", type=int, default=cpu_count())
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument(
        "--trainer",
        action="store_true",
        help="train with cllm.train's Trainer (random windows) against a PyTorch random-window "
        "loop, on this repository's docs and source plus Vim's documentation",
    )
    args = ap.parse_args()
    if args.trainer:
        run_trainer(args)
        return

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
