"""The cost estimate's arithmetic against the engine's real buffers, and the probe cache."""

from __future__ import annotations

import numpy as np
import pytest

from cllm.engine.config import GPTConfig, num_params
from cllm.engine.model import GPT, Activations
from cllm.engine.optim import AdamW
from cllm.train import estimate as E

CFG = GPTConfig(vocab_size=300, n_embd=48, n_layer=2, n_head=3, block_size=40)


def _nbytes(obj) -> int:
    return sum(v.nbytes for v in vars(obj).values() if isinstance(v, np.ndarray))


def _acts_bytes(acts) -> int:
    probs = getattr(acts, "probs", [])  # the kept tiles: a list, one array or None a layer
    return _nbytes(acts) + sum(p.nbytes for p in probs if p is not None)


@pytest.mark.parametrize("B, T", [(1, 5), (3, 40), (8, 16)])
@pytest.mark.parametrize("tiled, keep", [(False, 0), (True, 0), (True, 1), (True, 2)])
def test_activation_count_matches_the_engine(B, T, tiled, keep):
    acts = Activations(CFG, B, T, np.float32, tiled, keep)
    assert 4 * E.activation_elements(CFG, B, T, tiled, keep) == _acts_bytes(acts)


@pytest.mark.parametrize(
    "B, T, threads", [(8, 64, 2), (3, 16, 4), (2, 200, 1), (1, 300, 8), (3, 260, 2)]
)
def test_memory_parts_match_a_trained_step(B, T, threads):
    cfg = GPTConfig(vocab_size=300, n_embd=48, n_layer=2, n_head=3, block_size=max(T, 40))
    gpt = GPT(cfg, threads=threads)
    opt = AdamW.for_model(gpt)
    x = np.random.default_rng(0).integers(0, 300, (B, T + 1)).astype(np.int32)
    gpt.forward(x[:, :-1], x[:, 1:])
    gpt.backward()
    parts = E.memory_parts(cfg, B, T, threads, tokenizer_bytes=1000, eval_batches=2)
    n = num_params(cfg)
    assert parts["params"] == gpt.params.nbytes == 4 * n
    shard_grads = {id(sh.grads): sh.grads.nbytes for sh in gpt.shards}
    assert parts["grads"] == sum(shard_grads.values())
    assert parts["adamw"] == opt.m.nbytes + opt.v.nbytes + opt.decay_mask.nbytes
    assert parts["activations"] == sum(_acts_bytes(sh.acts) for sh in gpt.shards)
    assert parts["validation"] == 2 * 2 * B * (T + 1) * 4
    assert parts["tokenizer"] == E.TOKENIZER_FACTOR * 1000


def test_estimate_arithmetic():
    probe = {
        "seconds_per_step": 0.05,
        "forward_seconds": 0.01,
        "runtime_rss": 100_000_000,
        "first_step_seconds": 0.7,
        "disk_bytes_per_s": 50e6,
    }
    est = E.estimate(
        CFG,
        B=4,
        T=16,
        steps=1000,
        eval_interval=200,
        eval_batches=8,
        keep_checkpoints=3,
        tokenizer_bytes=5000,
        history_steps=0,
        threads=2,
        probe_result=probe,
        epochs=2,
        checkpoint_interval=300,
    )
    evals = 1000 // 200 + 1
    saves = evals + 2 + 1 + 1000 // 300
    want = 0.7 + 1000 * 0.05 + evals * 8 * 0.01 + saves * est.model_file_bytes / 50e6
    assert est.seconds == pytest.approx(want)
    parts = E.memory_parts(CFG, 4, 16, 2, 5000, 8)
    assert est.peak_bytes == 100_000_000 + sum(parts.values())
    assert est.checkpoint_bytes == 4 * est.model_file_bytes
    assert est.model_file_bytes >= 12 * num_params(CFG)
    line = est.line()
    assert "1,000 steps" in line and "peak memory" in line and "checkpoints up to" in line


def test_slices_follow_the_engine():
    assert E.slices(8, 64, 2) == [4, 4]
    assert E.slices(3, 128, 8) == [1, 1, 1]
    assert E.slices(8, 16, 4) == [8]  # B * T < 256: one slice


def test_probe_is_cached_per_shape(tmp_path):
    first, cached = E.probe_cached(tmp_path, CFG, 2, 8, 1)
    assert not cached and first["seconds_per_step"] > 0 and first["runtime_rss"] > 0
    assert first["first_step_seconds"] > 0 and first["disk_bytes_per_s"] > 0
    assert not list(tmp_path.glob(".probe-disk-*"))
    again, cached = E.probe_cached(tmp_path, CFG, 2, 8, 1)
    assert cached and again == first
    _, cached = E.probe_cached(tmp_path, CFG, 2, 9, 1)  # another shape is probed
    assert not cached
