"""Chat while a model trains, headless: the first reply token's latency and the reply's speed,
idle and then while the model trains in the same process (as the studio does), and the
training's speed while the reply runs.

    python scripts/chat_while_training.py [--models-dir DIR] [--name demo] [--tokens 64]

Makes the tiny demo model (the project's own docs and source) in DIR when it is not there. The
chat copy is loaded from the model file, as the studio's LLM tab does. Goals: first token within
1 s and at least 30% of the idle speed while training. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cllm.cli.bench import machine, set_threads  # noqa: E402
from cllm.models.registry import Registry  # noqa: E402
from cllm.train.trainer import Trainer  # noqa: E402


def reply(lm, prompt: str, tokens: int, seconds: float = 3.0) -> dict:
    """Replies (greedy, ``tokens`` long) one after another for ``seconds``: the first reply's
    seconds to its first piece (the worst of all replies too) and pieces/s over all of them."""
    firsts, n, t_start = [], 0, time.perf_counter()
    while not firsts or time.perf_counter() - t_start < seconds:
        t0 = time.perf_counter()
        first = None
        for _ in lm.generate(prompt, max_tokens=tokens, temperature=0.0, top_k=0, top_p=1.0):
            n += 1
            if first is None:
                first = time.perf_counter() - t0
        firsts.append(first if first is not None else time.perf_counter() - t0)
    total = time.perf_counter() - t_start
    return {
        "first_s": round(firsts[0], 4),
        "worst_first_s": round(max(firsts), 4),
        "replies": len(firsts),
        "pieces_per_s": round(n / total, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models-dir", default="/tmp/cllm-chat-bench")
    ap.add_argument("--name", default="demo")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt", default="The model")
    args = ap.parse_args()
    info = set_threads(os.cpu_count() or 1)
    reg = Registry(args.models_dir)
    if args.name not in reg.names():
        from cllm.data.corpus import demo_corpus

        text = demo_corpus()
        reg.create(args.name, preset="tiny", text=text, target_epochs=1000, sources=["demo"])
        with reg.queue(args.name) as q:
            q.add_text(text, source="demo corpus")
    lm = reg.load(args.name)
    reply(lm, args.prompt, 4, seconds=0)  # compile and warm
    idle = reply(lm, args.prompt, args.tokens)
    trainer = Trainer(reg, args.name, publish=False)
    trainer.start()
    try:
        t0 = time.monotonic()
        while trainer.snapshot().step < 3 and time.monotonic() - t0 < 120:
            time.sleep(0.1)
        s0, w0 = trainer.snapshot().tokens, time.monotonic()
        time.sleep(3.0)
        alone = (trainer.snapshot().tokens - s0) / (time.monotonic() - w0)
        s0, w0 = trainer.snapshot().tokens, time.monotonic()
        busy = reply(lm, args.prompt, args.tokens)
        beside = (trainer.snapshot().tokens - s0) / (time.monotonic() - w0)
    finally:
        trainer.stop()
        trainer.join(60)
    out = {
        "bench": "chat_while_training",
        "idle": idle,
        "training": busy,
        "speed_share": round(busy["pieces_per_s"] / max(idle["pieces_per_s"], 1e-9), 3),
        "train_tokens_per_s_alone": round(alone, 1),
        "train_tokens_per_s_while_chatting": round(beside, 1),
        **info,
        **machine(),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
