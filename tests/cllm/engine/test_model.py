import math

import numpy as np
import pytest

from cllm.engine.config import GPTConfig, num_params, param_shapes
from cllm.engine.model import GPT, decay_mask
from cllm.errors import ValidationError

CFG = GPTConfig(vocab_size=37, n_embd=16, n_layer=2, n_head=4, block_size=12)


def batch(cfg, B, T, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32)
    y = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32)
    return x, y


def test_layout_and_init():
    gpt = GPT(CFG, seed=3)
    assert gpt.params.dtype == np.float32 and gpt.params.size == num_params(CFG)
    assert list(gpt.p) == [n for n, _ in param_shapes(CFG)]
    for name, shape in param_shapes(CFG):
        assert gpt.p[name].shape == shape and np.shares_memory(gpt.p[name], gpt.params)
        assert gpt.g[name].shape == shape and np.shares_memory(gpt.g[name], gpt.grads)
    big = GPT(GPTConfig(vocab_size=512, n_embd=64, n_layer=3, n_head=4, block_size=64), seed=0)
    assert np.std(big.p["wte"]) == pytest.approx(0.02, rel=0.05)
    assert np.std(big.p["h.0.mlp.c_fc.weight"]) == pytest.approx(0.02, rel=0.05)
    assert np.std(big.p["h.1.attn.c_proj.weight"]) == pytest.approx(0.02 / math.sqrt(6), rel=0.05)
    assert not big.p["h.2.mlp.c_fc.bias"].any() and (big.p["ln_f.weight"] == 1).all()
    assert np.array_equal(GPT(CFG, seed=3).params, gpt.params)  # seeded


def test_whole_model_gradient_finite_differences():
    gpt = GPT(CFG, seed=1, dtype=np.float64)
    gpt.params += np.random.default_rng(5).normal(0, 0.05, gpt.params.size)  # break symmetries
    x, y = batch(CFG, 3, 9)
    x[0, :3] = 4  # a repeated token exercises the embedding scatter
    gpt.forward(x, y)
    gpt.backward()
    analytic = gpt.grads.copy()
    rng = np.random.default_rng(2)
    # check entries from every tensor, not only the big ones
    idx = []
    off = 0
    for _, shape in param_shapes(CFG):
        n = math.prod(shape)
        idx += list(off + rng.choice(n, size=min(3, n), replace=False))
        off += n
    eps = 1e-6
    for i in idx:
        old = gpt.params[i]
        gpt.params[i] = old + eps
        fp = gpt.forward(x, y)
        gpt.params[i] = old - eps
        fm = gpt.forward(x, y)
        gpt.params[i] = old
        num = (fp - fm) / (2 * eps)
        assert analytic[i] == pytest.approx(num, rel=1e-5, abs=1e-9), i
    # the wpe rows past T get no gradient
    assert not gpt.g["wpe"][9:].any()


def test_float32_forward_matches_float64():
    g32 = GPT(CFG, seed=4)
    g64 = GPT(CFG, seed=4, dtype=np.float64)
    g64.params[:] = g32.params
    x, y = batch(CFG, 2, 12)
    assert g32.forward(x, y) == pytest.approx(g64.forward(x, y), rel=1e-5)
    g32.backward()
    g64.backward()
    np.testing.assert_allclose(g32.grads, g64.grads, atol=1e-5)


def test_causal_future_tokens_do_not_change_past_logits():
    gpt = GPT(CFG, seed=0)
    x, _ = batch(CFG, 1, 12)
    a = gpt.forward(x)
    x2 = x.copy()
    x2[0, 7:] = (x2[0, 7:] + 1) % CFG.vocab_size
    b = gpt.forward(x2)
    np.testing.assert_array_equal(a[0, :7], b[0, :7])
    assert not np.allclose(a[0, 7:], b[0, 7:])


def test_forward_returns_a_copy_and_logits_shapes():
    gpt = GPT(CFG, seed=0)
    x, _ = batch(CFG, 2, 5)
    a = gpt.forward(x)
    gpt.forward(batch(CFG, 2, 5, seed=9)[0])
    np.testing.assert_array_equal(a, gpt.forward(x))
    assert gpt.logits(x[0]).shape == (5, CFG.vocab_size)
    assert gpt.logits(x).shape == (2, 5, CFG.vocab_size)


def test_loss_is_mean_of_per_position_losses():
    gpt = GPT(CFG, seed=0)
    x, y = batch(CFG, 2, 6)
    loss = gpt.forward(x, y)
    assert gpt.losses.shape == (2, 6)
    assert loss == pytest.approx(float(gpt.losses.mean()))
    logits = gpt.forward(x).astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    assert loss == pytest.approx(ref.mean(), rel=1e-5)
    assert gpt.forward(x, y) == pytest.approx(math.log(CFG.vocab_size), rel=0.1)  # fresh init


def test_decode_with_cache_equals_full_forward():
    gpt = GPT(CFG, seed=2)
    x, _ = batch(CFG, 2, 12)
    full = gpt.forward(x)
    cache = gpt.new_cache(batch=2)
    parts = [gpt.decode(x[:, :5], cache)]
    parts += [gpt.decode(x[:, t : t + 1], cache) for t in range(5, 9)]
    parts.append(gpt.decode(x[:, 9:], cache))
    assert cache.pos == 12
    np.testing.assert_allclose(np.concatenate(parts, 1), full, atol=1e-5)
    with pytest.raises(ValidationError):
        gpt.decode(x[:, :1], cache)  # full
    with pytest.raises(ValidationError):
        gpt.decode(np.array([[CFG.vocab_size]]), gpt.new_cache())


def test_refusals():
    gpt = GPT(CFG)
    with pytest.raises(ValidationError):
        gpt.forward(np.zeros((1, 13), np.int32))
    with pytest.raises(ValidationError):
        gpt.forward(np.full((1, 3), CFG.vocab_size, np.int32))
    with pytest.raises(RuntimeError):
        GPT(CFG).backward()


def test_grow_layers_keeps_logits_and_trains():
    gpt = GPT(CFG, seed=0)
    x, y = batch(CFG, 2, 10)
    before = gpt.forward(x)
    old_cfg, old = gpt.config, gpt.params.copy()
    gpt.grow_layers(4)
    assert gpt.config.n_layer == 4 and gpt.params.size == num_params(gpt.config)
    np.testing.assert_allclose(gpt.forward(x), before, atol=1e-6)
    remapped = GPT.remap_flat(old_cfg, gpt.config, old)
    np.testing.assert_array_equal(remapped[: old.size - 2 * 16], old[: old.size - 2 * 16])
    assert gpt.p["h.3.attn.c_attn.weight"].std() > 0  # new blocks can learn
    gpt.forward(x, y)
    gpt.backward()
    assert np.abs(gpt.g["h.3.mlp.c_proj.weight"]).sum() > 0
    with pytest.raises(ValidationError):
        gpt.grow_layers(3)


def test_decay_mask_marks_matrices_only():
    m = decay_mask(CFG)
    off = 0
    for name, shape in param_shapes(CFG):
        n = math.prod(shape)
        assert (m[off : off + n] == (1.0 if len(shape) == 2 else 0.0)).all(), name
        off += n
    assert off == m.size


def test_matches_torch_reference():
    torch = pytest.importorskip("torch")
    from cllm.engine.torch_ref import from_flat

    gpt = GPT(CFG, seed=7)
    gpt.params += np.random.default_rng(1).normal(0, 0.02, gpt.params.size).astype(np.float32)
    x, y = batch(CFG, 3, 12)
    ref = from_flat(CFG, gpt.params)
    tl = ref(torch.from_numpy(x).long(), torch.from_numpy(y).long())
    tl.backward()
    assert gpt.forward(x, y) == pytest.approx(float(tl.detach()), rel=1e-5)
    gpt.backward()
    np.testing.assert_allclose(gpt.grads, ref.flat(grads=True), atol=2e-6)
    np.testing.assert_allclose(
        gpt.forward(x), ref(torch.from_numpy(x).long()).detach().numpy(), atol=1e-5
    )


def test_batch_slices_on_threads_match_one_thread():
    x, y = batch(CFG, 5, 12)
    x, y = np.tile(x, (6, 1)), np.tile(y, (6, 1))  # 30 x 12: enough work to be cut in slices
    one, three = GPT(CFG, seed=3, threads=1), GPT(CFG, seed=3, threads=3)
    assert one.forward(x, y) == pytest.approx(three.forward(x, y), rel=1e-6)
    assert len(three.shards) == 3
    np.testing.assert_allclose(three.losses, one.losses, rtol=1e-6)
    one.backward()
    three.backward()
    np.testing.assert_allclose(three.grads, one.grads, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(three.forward(x), one.forward(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_token_decode_path_equals_full_forward(dtype):
    gpt = GPT(CFG, seed=5, dtype=dtype)
    x, _ = batch(CFG, 1, 12)
    full = gpt.forward(x)
    cache = gpt.new_cache()
    steps = [gpt.decode(x[:, :3], cache)] + [
        gpt.decode(x[:, t : t + 1], cache) for t in range(3, 12)
    ]
    np.testing.assert_allclose(
        np.concatenate(steps, 1), full, atol=1e-5 if dtype == np.float32 else 1e-12
    )


def test_alternating_batch_shapes_reuse_buffers():
    gpt = GPT(CFG, seed=1, threads=2)
    a, b = batch(CFG, 40, 12), batch(CFG, 30, 10, seed=1)
    la = gpt.forward(*a)
    first = gpt.shards
    lb = gpt.forward(*b)
    assert gpt.forward(*a) == la and gpt.shards is first  # the training shape's buffers are kept
    assert gpt.forward(*b) == lb
    gpt.backward()
    ref = GPT(CFG, seed=1, threads=1)
    ref.forward(*b)
    ref.backward()
    np.testing.assert_allclose(gpt.grads, ref.grads, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("budget_layers", [0, 1, 2])
def test_tiled_training_keeps_probabilities_within_budget(monkeypatch, budget_layers):
    """A tiled model keeps the tiles' probabilities of as many layers as KEEP_PROBS_MB allows
    and makes the others' again; whichever it does, the loss and gradients are the dense path's."""
    from cllm.engine import blas
    from cllm.engine import model as M

    # NumPy's products: the fused path keeps no probabilities
    monkeypatch.setattr(blas, "gemm", lambda dtype: None)
    monkeypatch.setattr(M, "TILE", 8)  # tiles of 8 rows: 3 tiles at T 20
    cfg = GPTConfig(vocab_size=37, n_embd=16, n_layer=2, n_head=4, block_size=20)
    x, y = batch(cfg, 3, 20)
    per_layer = 3 * M.tile_layout(20, 4)[1] * 8  # all threads' tiles of one layer, float64
    monkeypatch.setattr(M, "KEEP_PROBS_MB", per_layer * budget_layers / 2**20)
    assert M.kept_layers(cfg, 3, 20, 8) == budget_layers
    tiled = GPT(cfg, seed=2, dtype=np.float64, threads=2, attention="tiled")
    dense = GPT(cfg, seed=2, dtype=np.float64, threads=2, attention="dense")
    assert tiled.forward(x, y) == pytest.approx(dense.forward(x, y), rel=1e-12)
    kept = [p is not None for p in tiled.shards[0].acts.probs]
    assert kept == [l < budget_layers for l in range(2)]
    tiled.backward()
    dense.backward()
    np.testing.assert_allclose(tiled.grads, dense.grads, rtol=1e-9, atol=1e-12)


def test_fused_training_matches_dense_and_keeps_no_probabilities(monkeypatch):
    """The fused attention (blocks of scores, NumPy's BLAS routine called from the kernels)
    trains as the dense path does, on two threads, and keeps nothing of size T x T."""
    from cllm.engine import model as M

    assert M.fused_attention(np.float64)
    monkeypatch.setattr(M, "FLASH_TILE", 8)  # 3 blocks a row at T 20, groups of 4 on the diagonal
    monkeypatch.setattr(M, "FLASH_DIAG", 4)
    cfg = GPTConfig(vocab_size=37, n_embd=16, n_layer=2, n_head=4, block_size=20)
    x, y = batch(cfg, 3, 20)
    tiled = GPT(cfg, seed=2, dtype=np.float64, threads=2, attention="tiled")
    dense = GPT(cfg, seed=2, dtype=np.float64, threads=2, attention="dense")
    assert tiled.forward(x, y) == pytest.approx(dense.forward(x, y), rel=1e-12)
    assert all(p is None for sh in tiled.shards for p in sh.acts.probs)
    tiled.backward()
    dense.backward()
    np.testing.assert_allclose(tiled.grads, dense.grads, rtol=1e-9, atol=1e-12)


def test_fused_attention_can_be_turned_off(monkeypatch):
    """CLLM_FUSED_ATTENTION=0 takes NumPy's products (and their kept probabilities) instead."""
    from cllm.engine import model as M

    monkeypatch.setenv("CLLM_FUSED_ATTENTION", "0")
    assert not M.fused_attention(np.float32)
    cfg = GPTConfig(vocab_size=37, n_embd=16, n_layer=2, n_head=4, block_size=20)
    x, y = batch(cfg, 2, 20)
    tiled = GPT(cfg, seed=2, dtype=np.float64, threads=1, attention="tiled")
    dense = GPT(cfg, seed=2, dtype=np.float64, threads=1, attention="dense")
    assert tiled.forward(x, y) == pytest.approx(dense.forward(x, y), rel=1e-12)
    assert all(p is not None for p in tiled.shards[0].acts.probs)  # kept: the NumPy path
    monkeypatch.setenv("CLLM_FUSED_ATTENTION", "1")
    assert M.fused_attention(np.float32)
