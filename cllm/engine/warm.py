"""Compile the decoding kernels ahead of a first reply.

numba compiles a kernel on its first call and keeps the machine code in its on-disk cache. On a
fresh install the first reply therefore waits for the decoding kernels to compile (15-25 s on 2
cores); once cached, a process loads them in well under a second. ``warm_decoding`` runs a tiny
model's prompt and a few new tokens through the same paths a chat reply takes, which fills the
cache. The studio, ``cllm serve`` and ``cllm chat`` (on a terminal) run it in a short-lived
process of their own when they start (``start``), at a low priority, so the window, a training
run and the requests hardly notice; it costs about a second once the cache is warm. (``cllm
serve`` on a fresh cache: a first completion 45 s after the start took 30.8 s without it, 0.5 s
with it.)
"""

from __future__ import annotations

import logging
import multiprocessing
import os

import numpy as np

log = logging.getLogger(__name__)


def warm_decoding() -> None:
    """Decode a prompt and a few tokens with a tiny model: every decoding kernel a reply calls."""
    from cllm.engine.config import GPTConfig
    from cllm.engine.generate import sample_stream
    from cllm.engine.model import GPT

    cfg = GPTConfig(vocab_size=257, n_embd=32, n_layer=1, n_head=2, block_size=64)
    gpt = GPT(cfg)
    for prompt in ([1], [1, 2, 3, 4, 5]):  # one token, and a prompt through the prefill
        list(sample_stream(gpt, np.array(prompt), 3, 0.8, 50, 0.9, 0, None))


def _child(nice: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which ends us
    try:
        os.nice(nice)
    except (AttributeError, OSError):
        pass
    warm_decoding()


def start(nice: int = 10) -> multiprocessing.Process | None:
    """``warm_decoding`` in a spawned process at ``nice``; returns it (started, daemonic), or None
    where no process could be started (the first reply then compiles the kernels itself)."""
    p = multiprocessing.get_context("spawn").Process(
        target=_child, args=(nice,), name="cllm-warm-decoding", daemon=True
    )
    try:
        p.start()
    except OSError as err:
        log.warning("decoding kernels not compiled ahead: %s", err)
        return None
    return p
