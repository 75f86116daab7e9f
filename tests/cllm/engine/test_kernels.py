"""Each layer's backward against central finite differences, in float64.

The loss of a layer is sum(out * R) for a fixed random R, so its gradient wrt out is R.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.engine import kernels as K
from cllm.engine.model import attention_backward, attention_forward, matmul_backward, matmul_forward

RNG = np.random.default_rng(0)


def numgrad(f, x, eps=1e-6, n_check=40):
    """Central differences of scalar f() wrt entries of x (changed in place); a random subset."""
    flat = x.reshape(-1)
    idx = RNG.choice(flat.size, size=min(n_check, flat.size), replace=False)
    out = np.zeros(idx.size)
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        out[j] = (fp - fm) / (2 * eps)
    return idx, out


def assert_grad(analytic, x, f, rtol=1e-6, atol=1e-8):
    idx, num = numgrad(f, x)
    np.testing.assert_allclose(analytic.reshape(-1)[idx], num, rtol=rtol, atol=atol)


def test_layernorm_backward():
    N, D = 6, 16
    x, w, b = RNG.normal(size=(N, D)), RNG.normal(size=D), RNG.normal(size=D)
    R = RNG.normal(size=(N, D))
    out, mean, rstd = np.empty((N, D)), np.empty(N), np.empty(N)

    def f():
        K.layernorm_forward(out, mean, rstd, x, w, b)
        return float((out * R).sum())

    f()
    dx0 = RNG.normal(size=(N, D))  # the backward accumulates into dinp
    dx, dw, db = dx0.copy(), np.empty(D), np.empty(D)
    K.layernorm_backward(dx, dw, db, R, x, mean, rstd, w)
    assert_grad(dx - dx0, x, f)
    assert_grad(dw, w, f)
    assert_grad(db, b, f)


def test_layernorm_matches_formula():
    x = RNG.normal(size=(5, 32)).astype(np.float32)
    w, b = RNG.normal(size=32).astype(np.float32), RNG.normal(size=32).astype(np.float32)
    out, mean, rstd = np.empty_like(x), np.empty(5, np.float32), np.empty(5, np.float32)
    K.layernorm_forward(out, mean, rstd, x, w, b)
    ref = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(out, ref, atol=1e-5)


def gelu_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_gelu_forward_backward():
    N, F = 5, 24
    pre0, b = RNG.normal(size=(N, F)) * 2, RNG.normal(size=F)
    R = RNG.normal(size=(N, F))
    pre, out = np.empty((N, F)), np.empty((N, F))

    def f():
        pre[:] = pre0
        K.bias_gelu_forward(out, pre, b)
        return float((out * R).sum())

    f()
    np.testing.assert_allclose(out, gelu_ref(pre0 + b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pre, pre0 + b)  # the pre-activation is kept for the backward
    d = R.copy()
    K.gelu_backward(d, pre)
    idx, num = numgrad(f, pre0)
    np.testing.assert_allclose(d.reshape(-1)[idx], num, rtol=1e-6, atol=1e-8)
    assert_grad(d.sum(0), b, f)


def test_attention_causal_and_backward():
    B, T, H, D = 2, 7, 3, 12
    qkv = RNG.normal(size=(B * T, 3 * D))
    R = RNG.normal(size=(B * T, D))
    y, att = np.empty((B * T, D)), np.empty((B, H, T, T))

    def f():
        attention_forward(y, att, qkv, B, T, H)
        return float((y * R).sum())

    f()
    assert np.all(np.triu(att, 1) == 0)  # nothing attends to the future
    np.testing.assert_allclose(att.sum(-1), 1.0)
    # reference: plain softmax attention with a mask
    hs = D // H
    q, k, v = (
        qkv[:, i * D : (i + 1) * D].reshape(B, T, H, hs).transpose(0, 2, 1, 3) for i in range(3)
    )
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = (p @ v).transpose(0, 2, 1, 3).reshape(B * T, D)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)

    dqkv, datt = np.empty_like(qkv), np.empty((B, H, T, T))
    attention_backward(dqkv, datt, R, att, qkv, B, T, H)
    idx, num = numgrad(f, qkv, n_check=120)
    np.testing.assert_allclose(dqkv.reshape(-1)[idx], num, rtol=1e-6, atol=1e-8)


def test_attention_decode_offset_matches_full():
    """Queries at an offset with a cache see exactly the prefix the full pass lets them see."""
    B, T, H, D, C = 1, 9, 2, 8, 12
    hs = D // H
    qkv = RNG.normal(size=(B * T, 3 * D))
    y_full, att = np.empty((B * T, D)), np.empty((B, H, T, T))
    attention_forward(y_full, att, qkv, B, T, H)
    kc, vc = np.zeros((B, H, C, hs)), np.zeros((B, H, C, hs))
    y = np.empty((B * T, D))
    for s, e in ((0, 4), (4, 5), (5, 9)):
        part = np.empty(((e - s), D))
        attention_forward(part, np.empty((B, H, e - s, e)), qkv[s:e], B, e - s, H, s, (kc, vc))
        y[s:e] = part
    np.testing.assert_allclose(y, y_full, rtol=1e-12, atol=1e-12)


def test_matmul_backward():
    N, I, O = 5, 6, 4
    x, w, b = RNG.normal(size=(N, I)), RNG.normal(size=(I, O)), RNG.normal(size=O)
    R = RNG.normal(size=(N, O))
    out = np.empty((N, O))

    def f():
        matmul_forward(out, x, w, b)
        return float((out * R).sum())

    f()
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    matmul_backward(dx, dw, db, R, x, w, np.ones(N))
    for a, v in ((dx, x), (dw, w), (db, b)):
        assert_grad(a, v, f)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_crossentropy_fused(dtype):
    N, V = 6, 11
    logits0 = (RNG.normal(size=(N, V)) * 3).astype(dtype)
    targets = RNG.integers(0, V, N).astype(np.int32)
    z = logits0.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    ref_losses = -logp[np.arange(N), targets]
    losses = np.empty(N, dtype)
    d = logits0.copy()
    K.crossentropy_forward_backward(d, targets, losses, 1.0 / N)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(losses, ref_losses, rtol=tol, atol=tol)
    ref_d = np.exp(logp)
    ref_d[np.arange(N), targets] -= 1
    np.testing.assert_allclose(d, ref_d / N, rtol=tol, atol=tol)


def test_crossentropy_large_logits_stay_finite():
    logits = np.array([[1000.0, -1000.0, 0.0]], np.float32)
    losses = np.empty(1, np.float32)
    K.crossentropy_forward_backward(logits, np.array([1], np.int32), losses, 1.0)
    assert np.isfinite(losses).all() and np.isfinite(logits).all()
    assert losses[0] == pytest.approx(2000.0, rel=1e-5)


def test_embedding_backward():
    B, T, D, V = 3, 4, 5, 6
    idx = RNG.integers(0, V, (B, T)).astype(np.int32)
    idx[0, :2] = 2  # a repeated token must accumulate
    dout = RNG.normal(size=(B, T, D))
    dwte, dwpe = np.zeros((V, D)), np.zeros((T + 2, D))
    K.embedding_backward(dwte, dwpe, dout, idx)
    ref = np.zeros((V, D))
    np.add.at(ref, idx.reshape(-1), dout.reshape(-1, D))
    np.testing.assert_allclose(dwte, ref)
    np.testing.assert_allclose(dwpe[:T], dout.sum(0))
    assert not dwpe[T:].any()


def test_float32_kernels_accuracy():
    """The float32 paths compute in float32 with their own exp, to bounds derived from their
    roundings (see kernels._gelu_gates), which hold on every x86-64 ISA: CI runs this file with
    NUMBA_CPU_NAME=haswell too. With eps the float32 epsilon, 2u = 2 sqrt(2/pi)(x + 0.044715 x^3),
    g = sigmoid(2u), h = 1 - g and t = x h d(2u)/dx, so that gelu = x g and gelu' = g (1 + t):
      - g and h each carry a relative error of at most (4 + 5|2u|) eps;
      - forward: |out - gelu| <= eps |x| g (6 + 5|2u|): g's error and one rounding of x g;
      - backward: |d - gelu'| <= eps g (1 + |t|)(15 + 10|2u|): g's and h's errors, du's three
        roundings and those of x h du, 1 + t and the product.
    Below float32's normal range (g < 1e-30, x < -8.4) the values flush towards zero: there the
    bound is absolute, 1e-33."""
    x = np.linspace(-12, 12, 24001).reshape(1, -1).astype(np.float32)
    pre, out = x.copy(), np.empty(x.shape, np.float32)
    K.bias_gelu_forward(out, pre, np.zeros(x.shape[1], np.float32))
    d = np.ones(x.shape, np.float32)
    K.gelu_backward(d, pre)
    eps = float(np.finfo(np.float32).eps)
    x64 = x.astype(np.float64)
    u2 = 2 * np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)
    with np.errstate(over="ignore"):  # exp(142) is inf in float64 too: then g or h is 0
        g, h = 1 / (1 + np.exp(-u2)), 1 / (1 + np.exp(u2))  # 1 -+ tanh would cancel in float64
    t = x64 * h * 2 * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x64**2)
    assert np.all(np.abs(out - x64 * g) <= eps * np.abs(x64) * g * (6 + 5 * np.abs(u2)) + 1e-33)
    assert np.all(
        np.abs(d - g * (1 + t)) <= eps * g * (1 + np.abs(t)) * (15 + 10 * np.abs(u2)) + 1e-33
    )
    # and against the finite difference of the exact function, as a check of the formula itself
    h_fd = 1e-6
    fd = (gelu_ref(x64 + h_fd) - gelu_ref(x64 - h_fd)) / (2 * h_fd)
    np.testing.assert_allclose(d, fd, rtol=2e-6, atol=2e-6)
    s = (RNG.normal(size=(3, 5, 5)) * 30).astype(np.float32)
    p = s.astype(np.float64) * 0.5
    p = np.where(np.tril(np.ones((5, 5), bool)), p, -np.inf)
    p = np.exp(p - p.max(-1, keepdims=True))
    K.attention_softmax_forward(s, np.empty((3, 5), np.float32), 0.5, 0)
    np.testing.assert_allclose(s, p / p.sum(-1, keepdims=True), rtol=2e-6, atol=1e-12)


PROBE = """
import numpy as np
from cllm.engine import kernels as K
x = np.zeros((2, 8), np.float32)
K.bias_gelu_forward(np.empty_like(x), x, np.zeros(8, np.float32))
s = K.bias_gelu_forward.stats
print(sum(s.cache_hits.values()), sum(s.cache_misses.values()))
"""


def test_numba_cache_keeps_each_cpu_target_apart(tmp_path):
    """One cache folder shared by an AVX2 (haswell) and a host build: each target compiles its own
    entry and loads only its own, so code built for AVX-512 never runs on an AVX2 machine."""

    def run(cpu: str | None) -> tuple[int, int]:
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
        env.pop("NUMBA_CPU_NAME", None)
        if cpu:
            env["NUMBA_CPU_NAME"] = cpu
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        hits, misses = map(int, out.stdout.split())
        return hits, misses

    host = os.environ.get("NUMBA_CPU_NAME") or None
    other = "generic" if host == "haswell" else "haswell"
    assert run(host) == (0, 1)  # compiled and cached
    assert run(other) == (0, 1)  # not the host's code: compiled for its own target
    assert run(host) == (1, 0) and run(other) == (1, 0)  # each finds its own entry


# the tiled attention's three ways: fused (blocks of scores, the kernels calling NumPy's BLAS
# routine), NumPy's products making the probabilities again, NumPy's products reading those kept
PATHS = ["fused", "numpy", "numpy-kept"]


def _tiled_path(monkeypatch, path):
    """Set the tiled attention up for ``path``; returns whether it keeps probabilities."""
    from cllm.engine import blas
    from cllm.engine import model as M

    if path == "fused":
        assert M.fused_attention(np.float64) and M.fused_attention(np.float32)
        monkeypatch.setattr(M, "FLASH_TILE", 64)  # several blocks and diagonal groups at T 300
        monkeypatch.setattr(M, "FLASH_DIAG", 16)
    else:
        monkeypatch.setattr(blas, "gemm", lambda dtype: None)
    return path == "numpy-kept"


def test_numpys_blas_routine_is_found():
    """The fused attention runs wherever NumPy's BLAS is OpenBLAS (its wheels bundle one): if
    the routine is not found there, the engine silently takes the slower path."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from cllm.engine import blas

    if not threadpoolctl.ThreadpoolController().select(internal_api="openblas").lib_controllers:
        pytest.skip("NumPy's BLAS is not OpenBLAS here")
    for dtype in (np.float32, np.float64):
        assert blas.gemm(dtype) is not None
    assert blas.gemm(np.int32) is None


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("T", [5, 130, 300])
def test_tiled_attention_matches_dense_and_finite_differences(monkeypatch, T, path):
    """The tiled attention computes the dense one's output and gradients, across tile edges and
    the fused path's blocks (whole and partial, on and off the diagonal)."""
    from cllm.engine.model import (
        attention_tiled_backward,
        attention_tiled_forward,
        tile_layout,
        tiled_scratch,
    )

    keep = _tiled_path(monkeypatch, path)
    B, H, D = 2, 2, 8
    hs = D // H
    qkv = RNG.normal(size=(B * T, 3 * D))
    R = RNG.normal(size=(B * T, D))
    scratch = tiled_scratch(H, T, hs, float, fused=path == "fused")
    y, lse = np.empty((B * T, D)), np.empty((B, H, T))
    probs = np.full(B * tile_layout(T, H)[1], np.nan) if keep else None

    def f():
        attention_tiled_forward(y, lse, qkv, B, T, H, scratch, probs)
        return float((y * R).sum())

    f()
    y_dense, att = np.empty((B * T, D)), np.empty((B, H, T, T))
    attention_forward(y_dense, att, qkv, B, T, H)
    # the float64 exp is within 1e-11 relative; the fused forward's exps are of scores less a
    # row's reference max (up to LAZY_MAX below the true one), the dense one's less the true max,
    # so their errors differ: an output of terms near 1 cancelling to 0.0026 differed by 1.7e-12
    np.testing.assert_allclose(y, y_dense, rtol=1e-10, atol=1e-11)
    q, k = (qkv[:, i * D : (i + 1) * D].reshape(B, T, H, hs).transpose(0, 2, 1, 3) for i in (0, 1))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    mx = s.max(-1)
    np.testing.assert_allclose(lse, mx + np.log(np.exp(s - mx[..., None]).sum(-1)), rtol=1e-10)

    if keep:
        assert not np.isnan(probs).any()  # every kept tile written whole
    scratch[:] = np.nan  # the backward reads the kept tiles or the lse, not the forward's scratch
    dqkv = np.full_like(qkv, np.nan)  # written, not added to
    attention_tiled_backward(dqkv, R, y, lse, qkv, B, T, H, scratch, probs)
    d_dense = np.empty_like(qkv)
    attention_backward(d_dense, np.empty((B, H, T, T)), R, att, qkv, B, T, H)
    np.testing.assert_allclose(dqkv, d_dense, rtol=1e-8, atol=1e-10)
    idx, num = numgrad(f, qkv, n_check=60)
    np.testing.assert_allclose(dqkv.reshape(-1)[idx], num, rtol=1e-6, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 2),
    T=st.integers(1, 70),
    H=st.integers(1, 3),
    hs=st.integers(1, 6),
    diag=st.sampled_from([1, 2, 4, 8]),
    groups=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_fused_attention_of_any_shape_and_blocking(B, T, H, hs, diag, groups, seed):
    """The fused kernels against the dense attention for any lengths, head counts and sizes,
    blocks (``diag * groups`` rows and keys) and diagonal groups: partial blocks at the end,
    a single row, a block wider than the sequence."""
    from cllm.engine import blas

    gemm = blas.gemm(np.float64)
    assert gemm is not None
    tile = diag * groups
    D = H * hs
    rng = np.random.default_rng(seed)
    qkv, dy = rng.normal(size=(B * T, 3 * D)), rng.normal(size=(B * T, D))
    t = min(tile, T)
    s, o, ml = np.empty(t * t), np.empty(t * hs), np.empty((2, t))
    kt, vt = np.empty(hs * T), np.empty(hs * t)
    y, lse = np.full((B * T, D), np.nan), np.full((B, H, T), np.nan)
    scale = 1.0 / math.sqrt(hs)
    K.attention_flash_forward(*gemm, y, lse, qkv, B, T, H, scale, tile, diag, s, o, ml, kt)
    dqkv = np.full_like(qkv, np.nan)
    dp, delta = np.empty(t * t), np.empty(T)
    K.attention_flash_backward(*gemm, dqkv, dy, y, lse, qkv, B, T, H, scale, tile, diag, s, dp,
                               delta, kt, vt)  # fmt: skip
    y_dense, att = np.empty((B * T, D)), np.empty((B, H, T, T))
    attention_forward(y_dense, att, qkv, B, T, H)
    np.testing.assert_allclose(y, y_dense, rtol=1e-9, atol=1e-11)  # float64, sums in other orders
    d_dense = np.empty_like(qkv)
    attention_backward(d_dense, np.empty((B, H, T, T)), dy, att, qkv, B, T, H)
    np.testing.assert_allclose(dqkv, d_dense, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("rise", [0.01, 0.2, 3.0])  # a block of 8 keys rises 0.08, 1.6, 24
def test_fused_forward_moves_its_row_max_lazily_and_stays_exact(rise):
    """The fused forward keeps a row's reference max until a block's scores exceed it by more
    than LAZY_MAX: scores rising along the keys (by ``rise`` a key, blocks of 8) take it through
    both branches, the reference kept and the output and sum rescaled, against dense attention."""
    from cllm.engine import blas

    gemm = blas.gemm(np.float64)
    B, T, H, hs, tile, diag = 1, 80, 2, 4, 8, 4
    D = H * hs
    rng = np.random.default_rng(0)
    qkv = rng.normal(size=(B * T, 3 * D)) * 0.1
    qkv[:, :D] += 1.0  # every query (0.1-noisy) ones, every key along ones: scores rise with j
    qkv[:, D : 2 * D] += rise * math.sqrt(hs) / hs * np.arange(T)[:, None]
    y, lse = np.empty((B * T, D)), np.empty((B, H, T))
    s, o, ml, kt = np.empty(tile * tile), np.empty(tile * hs), np.empty((2, tile)), np.empty(hs * T)
    K.attention_flash_forward(*gemm, y, lse, qkv, B, T, H, 1.0 / math.sqrt(hs), tile, diag,
                              s, o, ml, kt)  # fmt: skip
    y_dense, att = np.empty((B * T, D)), np.empty((B, H, T, T))
    attention_forward(y_dense, att, qkv, B, T, H)
    np.testing.assert_allclose(y, y_dense, rtol=1e-10, atol=1e-11)  # the exp's 1e-11, as above
    q, k = (qkv[:, i * D : (i + 1) * D].reshape(T, H, hs).transpose(1, 0, 2) for i in (0, 1))
    sc = np.where(np.tril(np.ones((T, T), bool)), q @ k.transpose(0, 2, 1) / math.sqrt(hs), -np.inf)
    mx = sc.max(-1)
    np.testing.assert_allclose(lse[0], mx + np.log(np.exp(sc - mx[..., None]).sum(-1)), rtol=1e-10)


def test_fused_attention_refuses_a_scratch_too_small():
    """The fused kernels do not check their bounds: a scratch sized for another path is
    refused before they run."""
    from cllm.engine.model import attention_tiled_forward, tiled_scratch

    B, T, H, D = 1, 100, 1, 4
    qkv, y, lse = np.ones((B * T, 3 * D)), np.empty((B * T, D)), np.empty((B, H, T))
    with pytest.raises(ValueError, match="too small"):
        attention_tiled_forward(y, lse, qkv, B, T, H, tiled_scratch(H, T, D, float, True)[:-1])


@pytest.mark.parametrize("path", PATHS)
def test_tiled_attention_matches_torch_in_float32(monkeypatch, path):
    torch = pytest.importorskip("torch")
    from cllm.engine.model import (
        attention_tiled_backward,
        attention_tiled_forward,
        tile_layout,
        tiled_scratch,
    )

    keep = _tiled_path(monkeypatch, path)
    B, T, H, D = 2, 300, 4, 64
    qkv = RNG.normal(size=(B * T, 3 * D)).astype(np.float32)
    dy = RNG.normal(size=(B * T, D)).astype(np.float32)
    y, lse = np.empty((B * T, D), np.float32), np.empty((B, H, T), np.float32)
    scratch = tiled_scratch(H, T, D // H, np.float32, fused=path == "fused")
    probs = np.empty(B * tile_layout(T, H)[1], np.float32) if keep else None
    attention_tiled_forward(y, lse, qkv, B, T, H, scratch, probs)
    dqkv = np.empty_like(qkv)
    attention_tiled_backward(dqkv, dy, y, lse, qkv, B, T, H, scratch, probs)

    t = torch.tensor(qkv, requires_grad=True)
    q, k, v = (x.view(B, T, H, D // H).transpose(1, 2) for x in t.split(D, dim=1))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref = ref.transpose(1, 2).reshape(B * T, D)
    ref.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ref.detach().numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(dqkv, t.grad.numpy(), rtol=1e-3, atol=1e-4)


def test_exp32_within_5_ulp_over_its_whole_range():
    """The vectorizing float32 exp (2**k from exponent bits, no float -> int conversion) against
    float64's exp, from underflow's edge to overflow's, on the hardware the tests run on."""
    from numba import njit

    from cllm.engine.kernels import _exp

    @njit(fastmath=True, error_model="numpy")
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = _exp(x[i])

    x = np.linspace(-87.0, 88.0, 2_000_003, dtype=np.float32)
    x = np.concatenate([x, np.float32([-1e-7, 0.0, 1e-7, 0.5, -0.5, 1.0, -1.0])])
    got = np.empty_like(x)
    run(x, got)
    want = np.exp(x.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 5.0  # 4.5 at worst, near the ends of the range


def test_row_max_of_every_length_and_position():
    from numba import njit

    from cllm.engine.kernels import _row_max

    @njit
    def run(row, n):
        return _row_max(row, n)

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):  # vectors of 8 and 4 lanes
        for n in range(1, 40):
            for where in range(n):
                row = rng.standard_normal(48).astype(dtype)
                row[where] = 9.0
                row[n:] = 99.0  # beyond n: never looked at
                assert run(row, n) == 9.0
            assert run(np.array([-3.0, -5.0] * 20, dtype), n) == -3.0
