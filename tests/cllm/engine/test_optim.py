import math

import numpy as np
import pytest

from cllm.engine.config import GPTConfig
from cllm.engine.model import GPT
from cllm.engine.optim import AdamW, clip_grad_norm, lr_at


def adamw_ref(p, g, m, v, mask, lr, b1, b2, eps, wd, t):
    """The update written straight from the paper (decoupled decay), in float64."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
    p = p - lr * (mhat / (np.sqrt(vhat) + eps) + wd * mask * p)
    return p, m, v


@pytest.mark.parametrize("n", [1000, 70_000])  # the larger one is cut in ranges over threads
def test_adamw_matches_formula_over_steps(n):
    rng = np.random.default_rng(0)
    mask = (rng.random(n) < 0.7).astype(np.float32)
    opt = AdamW(n, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, decay_mask=mask)
    p = rng.normal(size=n).astype(np.float32)
    rp, rm, rv = p.astype(np.float64), np.zeros(n), np.zeros(n)
    for t in range(1, 6):
        g = rng.normal(size=n).astype(np.float32)
        lr = 1e-2 / t
        opt.step(p, g, lr)
        rp, rm, rv = adamw_ref(rp, g.astype(np.float64), rm, rv, mask, lr, 0.9, 0.99, 1e-8, 0.1, t)
    assert opt.t == 5
    np.testing.assert_allclose(p, rp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt.m, rm, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(opt.v, rv, rtol=1e-5, atol=1e-7)


def test_adamw_state_round_trip_resumes_exactly():
    rng = np.random.default_rng(1)
    n = 50
    a, b = AdamW(n, lr=1e-3), AdamW(n, lr=1e-3)
    pa = rng.normal(size=n).astype(np.float32)
    g = rng.normal(size=n).astype(np.float32)
    a.step(pa, g)
    pb = pa.copy()
    b.load_state_dict(a.state_dict())
    a.step(pa, g)
    b.step(pb, g)
    np.testing.assert_array_equal(pa, pb)
    with pytest.raises(ValueError):
        AdamW(n + 1).load_state_dict(a.state_dict())


def test_adamw_for_model_decays_matrices_only_and_follows_growth():
    cfg = GPTConfig(vocab_size=11, n_embd=8, n_layer=1, n_head=2, block_size=4)
    gpt = GPT(cfg)
    opt = AdamW.for_model(gpt, lr=0.1, weight_decay=0.5)
    gpt.p["h.0.attn.c_attn.bias"][:] = 1.0
    before = gpt.params.copy()
    opt.step(gpt.params, np.zeros_like(gpt.grads))  # zero gradient: only decay moves weights
    assert np.array_equal(gpt.p["h.0.attn.c_attn.bias"], np.ones(24, np.float32))
    assert np.allclose(gpt.p["wte"].ravel(), before[: 11 * 8] * (1 - 0.1 * 0.5))
    old_cfg = gpt.config
    opt.m[:] = 1.0
    gpt.grow_layers(2)
    opt.remap(old_cfg, gpt.config, gpt.decay_mask())
    assert opt.m.size == gpt.params.size and opt.decay_mask.size == gpt.params.size
    assert opt.m[: 11 * 8].all() and not opt.m[gpt.params.size - 200 : gpt.params.size - 16].any()
    opt.step(gpt.params, gpt.grads)


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    p0 = rng.normal(size=(6, 5)).astype(np.float32)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.AdamW([tp], lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    opt = AdamW(30, lr=3e-3, weight_decay=0.1, decay_mask=np.ones(30, np.float32))
    p = p0.reshape(-1).copy()
    for _ in range(4):
        g = rng.normal(size=(6, 5)).astype(np.float32)
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        opt.step(p, g.reshape(-1))
    np.testing.assert_allclose(p, tp.detach().numpy().reshape(-1), rtol=1e-6, atol=1e-7)


def test_lr_schedule():
    kw = dict(max_steps=1000, warmup=100, max_lr=1e-3, min_lr=1e-4)
    assert lr_at(0, **kw) == pytest.approx(1e-5)
    assert lr_at(49, **kw) == pytest.approx(5e-4)
    assert lr_at(99, **kw) == pytest.approx(1e-3)
    assert lr_at(100, **kw) == pytest.approx(1e-3)
    assert lr_at(550, **kw) == pytest.approx(5.5e-4)  # halfway down the cosine
    assert lr_at(1000, **kw) == pytest.approx(1e-4)
    assert lr_at(5000, **kw) == pytest.approx(1e-4)
    lrs = [lr_at(s, **kw) for s in range(100, 1001)]
    assert all(a >= b for a, b in zip(lrs[:-1], lrs[1:], strict=True))
    assert lr_at(0, max_steps=10, warmup=0, max_lr=1.0, min_lr=0.0) == pytest.approx(1.0)


def test_clip_grad_norm():
    g = np.array([3.0, 4.0], np.float32)
    assert clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    assert np.linalg.norm(g) == pytest.approx(1.0, rel=1e-5)
    g = np.array([0.3, 0.4], np.float32)
    assert clip_grad_norm(g, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(g, np.array([0.3, 0.4], np.float32))  # untouched below the max
    assert clip_grad_norm(np.zeros(3, np.float32), 1.0) == 0.0
    assert math.isfinite(clip_grad_norm(np.full(10, 1e3, np.float32), 0.5))


def test_training_run_tracks_torch():
    """Forward, backward, clipping, schedule and AdamW together: 30 steps stay on torch's path."""
    torch = pytest.importorskip("torch")
    from cllm.engine import torch_ref

    torch.set_num_threads(1)
    cfg = GPTConfig(vocab_size=64, n_embd=32, n_layer=2, n_head=4, block_size=16)
    gpt = GPT(cfg, seed=0)
    opt = AdamW.for_model(gpt, lr=3e-3, weight_decay=0.1)
    ref = torch_ref.from_flat(cfg, gpt.params)
    ref_opt = torch_ref.make_optimizer(ref, lr=3e-3)
    rng = np.random.default_rng(0)
    seq = rng.integers(0, 8, 400).astype(np.int32) * 7 % 64  # a learnable pattern
    for s in range(30):
        i = rng.integers(0, 400 - 17, 6)
        x = np.stack([seq[j : j + 16] for j in i])
        y = np.stack([seq[j + 1 : j + 17] for j in i])
        lr = lr_at(s, 30, 5, 3e-3, 3e-4)
        loss = gpt.forward(x, y)
        gpt.backward()
        norm = clip_grad_norm(gpt.grads, 1.0)
        opt.step(gpt.params, gpt.grads, lr)
        ref_loss, ref_norm = torch_ref.train_step(ref, ref_opt, x, y, lr)
        assert loss == pytest.approx(ref_loss, rel=1e-4) and norm == pytest.approx(
            ref_norm, rel=1e-3
        )
    np.testing.assert_allclose(gpt.params, ref.flat(), atol=1e-4)
    assert loss < 0.8 * math.log(64)  # it learned something
