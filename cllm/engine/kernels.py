"""Numba kernels for the hot loops that NumPy does not do well, in forward/backward pairs.

Every kernel takes its output buffers as arguments (llm.c style) and works for float32 (training)
and float64 (the gradient checks). Shapes are in the docstrings: N rows (B*T positions), D width,
F MLP width, V vocabulary. Matrix products are not here: they go through NumPy's BLAS.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
from numba import njit
from numba.core import types
from numba.extending import intrinsic, overload

# The engine runs batch slices on its own thread pool and asks numba only for its thread count.
# numba's default OpenMP layer would launch a second OpenMP runtime for that answer, and beside
# torch's (the benchmark's reference, in the same process) torch's threaded steps run ~50x slower;
# the plain workqueue layer costs the engine nothing. Set here so every entry point agrees.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

LN_EPS = 1e-5  # GPT-2's layer_norm_epsilon
GELU_C = math.sqrt(2.0 / math.pi)
LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 0.693145751953125, 1.4286068203094173e-06  # ln 2 = HI + LO, HI exact in 17 bits

# error_model="numpy": no ZeroDivisionError checks, which would stop loops from vectorizing
jit = njit(nogil=True, cache=True, fastmath=True, error_model="numpy")


@intrinsic
def _float_from_bits(typingctx, bits):
    """Reinterpret an int64 (int32) as a float64 (float32): a bit cast that vectorizes."""
    ftype = types.float64 if bits.bitwidth == 64 else types.float32

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(ftype))

    return ftype(bits), codegen


def _cast(like, value):
    """``value`` in the float type of ``like``: float32 kernels then compute in float32 (twice
    the SIMD lanes) and the float64 ones, for the gradient checks, in float64."""
    return value


@overload(_cast, inline="always")
def _cast_ol(like, value):
    if like == types.float32:
        return lambda like, value: np.float32(value)
    return lambda like, value: np.float64(value)


def _exp(x):
    """exp(x) in plain arithmetic, so that the loops calling it vectorize (numba's math.exp is
    a scalar libm call here): 2**k * exp(r) with |r| <= ln2/2, 2**k built from exponent bits."""
    return math.exp(x)


@overload(_exp, inline="always", jit_options={"fastmath": True, "error_model": "numpy"})
def _exp_ol(x):
    if x == types.float32:

        def exp32(x):  # ~2 ulp
            x = min(max(x, np.float32(-87.0)), np.float32(88.0))
            k = np.floor(x * np.float32(LOG2E) + np.float32(0.5))
            r = (x - k * np.float32(0.693359375)) - k * np.float32(-2.12194440e-4)
            p = np.float32(1 / 5040)
            p = p * r + np.float32(1 / 720)
            p = p * r + np.float32(1 / 120)
            p = p * r + np.float32(1 / 24)
            p = p * r + np.float32(1 / 6)
            p = p * r + np.float32(0.5)
            p = (p * r + np.float32(1.0)) * r + np.float32(1.0)
            return p * _float_from_bits(np.int32((np.int64(k) + 127) << 23))  # numba widens ints

        return exp32

    def exp64(x):  # ~1e-11 relative: Taylor to r**9
        x = min(max(x, -708.0), 709.0)
        k = math.floor(x * LOG2E + 0.5)
        r = (x - k * LN2_HI) - k * LN2_LO
        p = 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = (p * r + 1.0) * r + 1.0
        return p * _float_from_bits((np.int64(k) + 1023) << 52)

    return exp64


@njit(inline="always", fastmath=True, error_model="numpy")
def _gelu_gates(x):
    """(g, h): the gate g = (1 + tanh(u)) / 2 = sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3),
    so that gelu(x) = x g, and its complement h = 1 - g = sigmoid(-2u).

    Both come from one a = exp(-|2u|) in (0, 1] as 1 / (1 + a) and a / (1 + a): no difference is
    taken, so nothing cancels whatever order or fused multiply-adds the compiler picks for the
    target ISA (1 - g written out loses all its digits as g -> 1, and 1 + tanh(u) as g -> 0), and
    nothing overflows. Each has relative error at most (4 + 5|2u|) float eps: 2 from exp, 5|2u|
    from the roundings of 2u that exp magnifies, 2 from the sum and the quotient."""
    u2 = _cast(x, 2.0 * GELU_C) * (x + _cast(x, 0.044715) * x * x * x)
    a = _exp(-abs(u2))
    big = _cast(x, 1.0) / (_cast(x, 1.0) + a)
    small = a * big
    if u2 >= 0:
        return big, small
    return small, big


@jit
def layernorm_forward(out, mean, rstd, inp, w, b):
    """out[N,D] = normalize(inp[N,D]) * w[D] + b[D]; keeps mean[N], rstd[N] for the backward."""
    N, D = inp.shape
    for n in range(N):
        x = inp[n]
        m = 0.0
        for i in range(D):
            m += x[i]
        m /= D
        var = 0.0
        for i in range(D):
            d = x[i] - m
            var += d * d
        s = 1.0 / math.sqrt(var / D + LN_EPS)
        o = out[n]
        for i in range(D):
            o[i] = (x[i] - m) * s * w[i] + b[i]
        mean[n] = m
        rstd[n] = s


@jit
def layernorm_backward(dinp, dw, db, dout, inp, mean, rstd, w):
    """dinp[N,D] += grad wrt inp (it is the residual stream); dw[D], db[D] are overwritten."""
    N, D = inp.shape
    dw[:] = 0.0
    db[:] = 0.0
    for n in range(N):
        x, g, di = inp[n], dout[n], dinp[n]
        m, s = mean[n], rstd[n]
        # the two means the normalization couples every input to
        dnorm_mean = 0.0
        dnorm_norm_mean = 0.0
        for i in range(D):
            norm = (x[i] - m) * s
            dnorm = g[i] * w[i]
            dnorm_mean += dnorm
            dnorm_norm_mean += dnorm * norm
            dw[i] += g[i] * norm
            db[i] += g[i]
        dnorm_mean /= D
        dnorm_norm_mean /= D
        for i in range(D):
            norm = (x[i] - m) * s
            di[i] += s * (g[i] * w[i] - dnorm_mean - norm * dnorm_norm_mean)


@jit
def bias_gelu_forward(out, pre, b):
    """pre[N,F] += b[F] in place (kept for the backward); out[N,F] = gelu_tanh(pre)."""
    N, F = pre.shape
    for n in range(N):
        p, o = pre[n], out[n]
        for i in range(F):
            x = p[i] + b[i]
            p[i] = x
            o[i] = x * _gelu_gates(x)[0]


@jit
def gelu_backward(dout, pre):
    """dout[N,F] *= gelu_tanh'(pre[N,F]) in place: on return it holds the gradient wrt pre."""
    N, F = pre.shape
    for n in range(N):
        p, d = pre[n], dout[n]
        for i in range(F):
            x = p[i]
            g, h = _gelu_gates(x)
            one = _cast(x, 1.0)
            du = _cast(x, 2.0 * GELU_C) * (one + _cast(x, 3.0 * 0.044715) * x * x)  # d(2u)/dx
            # gelu' = g + x g'(x) = g + x g (1 - g) d(2u)/dx = g (1 + x h du): a sum of two terms
            # of one sign for x >= 0; for x < 0 both shrink with g, so its error stays relative
            d[i] *= g * (one + x * h * du)


@jit
def attention_softmax_forward(att, scale, offset):
    """Causal softmax in place over att[BH, Tq, Tk] of raw scores q.k.

    Query row i sits at absolute position i + offset and sees keys 0..i+offset; the rest are set
    to zero. The 1/sqrt(head size) scale is applied here, so the matmul needs no extra pass.
    """
    BH, Tq, Tk = att.shape
    sc = _cast(att[0, 0, 0], scale)
    for bh in range(BH):
        for i in range(Tq):
            row = att[bh, i]
            n = i + offset + 1
            mx = row[0]
            for j in range(1, n):
                mx = max(mx, row[j])
            s = 0.0
            for j in range(n):
                e = _exp(sc * (row[j] - mx))
                row[j] = e
                s += e
            r = _cast(mx, 1.0 / s)
            for j in range(n):
                row[j] *= r
            for j in range(n, Tk):
                row[j] = 0.0


@jit
def attention_softmax_backward(datt, att, scale):
    """datt[BH,T,T] (grad wrt the probabilities) becomes, in place, the grad wrt the raw scores."""
    BH, T, _ = att.shape
    for bh in range(BH):
        for i in range(T):
            p, d = att[bh, i], datt[bh, i]
            dot = 0.0
            for j in range(i + 1):
                dot += p[j] * d[j]
            for j in range(i + 1):
                d[j] = scale * p[j] * (d[j] - dot)
            for j in range(i + 1, T):
                d[j] = 0.0


@jit
def crossentropy_forward_backward(logits, targets, losses, dscale):
    """Fused softmax + cross-entropy over logits[N,V] with targets[N].

    Writes each position's loss into losses[N] and overwrites logits with the gradient of
    dscale * sum(losses) (dscale = 1/N for the mean), so the [N,V] buffer is reused for dlogits.
    """
    N, V = logits.shape
    for n in range(N):
        row = logits[n]
        mx = row[0]
        for j in range(1, V):
            mx = max(mx, row[j])
        y = targets[n]
        zy = row[y] - mx  # kept before exp: exp of it may underflow to 0
        s = 0.0
        for j in range(V):
            e = _exp(row[j] - mx)
            row[j] = e
            s += e
        losses[n] = math.log(s) - zy
        r = _cast(mx, dscale / s)
        for j in range(V):
            row[j] *= r
        row[y] -= dscale


@jit
def embedding_backward(dwte, dwpe, dout, idx):
    """dwte[V,D] += scatter of dout[B,T,D] by token idx[B,T]; dwpe[:T] += sum over the batch."""
    B, T, D = dout.shape
    for b in range(B):
        for t in range(T):
            g = dout[b, t]
            dw, dp = dwte[idx[b, t]], dwpe[t]
            for i in range(D):
                dw[i] += g[i]
                dp[i] += g[i]


@jit
def adamw_update(params, grads, m, v, decay, lr, beta1, beta2, eps, weight_decay, t):
    """One AdamW step over flat buffers; decay[i] (0 or 1) marks the weights that decay."""
    c1 = 1.0 / (1.0 - beta1**t)
    c2 = 1.0 / (1.0 - beta2**t)
    for i in range(params.size):
        g = grads[i]
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i] = mi
        v[i] = vi
        upd = (mi * c1) / (math.sqrt(vi * c2) + eps) + weight_decay * decay[i] * params[i]
        params[i] -= lr * upd


@jit
def _matvec(out, x, params, w_off, b_off, n_in, n_out):
    """out[O] = x[I] @ W[I,O] + b[O], W and b read from the flat buffer at their offsets."""
    w = params[w_off : w_off + n_in * n_out].reshape(n_in, n_out)
    out[:] = params[b_off : b_off + n_out]
    for i in range(n_in):
        xi = x[i]
        row = w[i]
        for o in range(n_out):
            out[o] += xi * row[o]


@jit
def _layernorm_vec(out, x, params, w_off, b_off):
    D = x.size
    m = 0.0
    for i in range(D):
        m += x[i]
    m /= D
    var = 0.0
    for i in range(D):
        var += (x[i] - m) * (x[i] - m)
    s = 1.0 / math.sqrt(var / D + LN_EPS)
    for i in range(D):
        out[i] = (x[i] - m) * s * params[w_off + i] + params[b_off + i]


@jit
def decode_one(params, offs, k_cache, v_cache, pos, token, x, ln, qkv, y, h, att, logits):
    """The whole forward of one token at position ``pos`` for a batch of one, in one call.

    At generation sizes NumPy's per-call overhead, not arithmetic, is the cost, so the model's
    every layer runs here. ``offs`` holds the flat-buffer offset of each tensor in param_shapes
    order; k_cache, v_cache are [L, H, C, hs]; x, ln, y [D], qkv [3D], h [F], att [C], logits [V]
    are scratch and output buffers.
    """
    L, H, _, hs = k_cache.shape
    D, F, V = x.size, h.size, logits.size
    wte = params[offs[0] : offs[0] + V * D].reshape(V, D)
    for i in range(D):
        x[i] = wte[token, i] + params[offs[1] + pos * D + i]
    scale = 1.0 / math.sqrt(hs)
    for l in range(L):
        o = offs[
            2 + 12 * l : 14 + 12 * l
        ]  # ln_1 w b, c_attn w b, c_proj w b, ln_2 w b, fc w b, proj w b
        _layernorm_vec(ln, x, params, o[0], o[1])
        _matvec(qkv, ln, params, o[2], o[3], D, 3 * D)
        for hd in range(H):
            q = qkv[hd * hs : (hd + 1) * hs]
            kc, vc = k_cache[l, hd], v_cache[l, hd]
            kc[pos, :] = qkv[D + hd * hs : D + (hd + 1) * hs]
            vc[pos, :] = qkv[2 * D + hd * hs : 2 * D + (hd + 1) * hs]
            mx = -1e30
            for j in range(pos + 1):
                s = 0.0
                for i in range(hs):
                    s += q[i] * kc[j, i]
                att[j] = s * scale
                mx = max(mx, att[j])
            tot = 0.0
            for j in range(pos + 1):
                att[j] = _exp(att[j] - mx)
                tot += att[j]
            yh = y[hd * hs : (hd + 1) * hs]
            yh[:] = 0.0
            for j in range(pos + 1):
                p = att[j] / tot
                for i in range(hs):
                    yh[i] += p * vc[j, i]
        _matvec(ln, y, params, o[4], o[5], D, D)
        for i in range(D):
            x[i] += ln[i]
        _layernorm_vec(ln, x, params, o[6], o[7])
        _matvec(h, ln, params, o[8], o[9], D, F)
        for i in range(F):
            v = h[i]
            h[i] = v * _gelu_gates(v)[0]
        _matvec(ln, h, params, o[10], o[11], F, D)
        for i in range(D):
            x[i] += ln[i]
    n = offs.size
    _layernorm_vec(ln, x, params, offs[n - 2], offs[n - 1])
    for v in range(V):
        s = 0.0
        row = wte[v]
        for i in range(D):
            s += ln[i] * row[i]
        logits[v] = s
