"""Numba kernels for the hot loops that NumPy does not do well, in forward/backward pairs.

Every kernel takes its output buffers as arguments (llm.c style) and works for float32 (training)
and float64 (the gradient checks). Shapes are in the docstrings: N rows (B*T positions), D width,
F MLP width, V vocabulary. Matrix products are not here: they go through NumPy's BLAS.
"""

from __future__ import annotations

import math

from numba import njit

LN_EPS = 1e-5  # GPT-2's layer_norm_epsilon
GELU_C = math.sqrt(2.0 / math.pi)


@njit(nogil=True, cache=True, fastmath=True)
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


@njit(nogil=True, cache=True, fastmath=True)
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


@njit(nogil=True, cache=True, fastmath=True)
def bias_gelu_forward(out, pre, b):
    """pre[N,F] += b[F] in place (kept for the backward); out[N,F] = gelu_tanh(pre)."""
    N, F = pre.shape
    for n in range(N):
        p, o = pre[n], out[n]
        for i in range(F):
            x = p[i] + b[i]
            p[i] = x
            t = math.tanh(GELU_C * (x + 0.044715 * x * x * x))
            o[i] = 0.5 * x * (1.0 + t)


@njit(nogil=True, cache=True, fastmath=True)
def gelu_backward(dout, pre):
    """dout[N,F] *= gelu_tanh'(pre[N,F]) in place: on return it holds the gradient wrt pre."""
    N, F = pre.shape
    for n in range(N):
        p, d = pre[n], dout[n]
        for i in range(F):
            x = p[i]
            t = math.tanh(GELU_C * (x + 0.044715 * x * x * x))
            dt = (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * x * x)
            d[i] *= 0.5 * (1.0 + t) + 0.5 * x * dt


@njit(nogil=True, cache=True, fastmath=True)
def attention_softmax_forward(att, scale, offset):
    """Causal softmax in place over att[BH, Tq, Tk] of raw scores q.k.

    Query row i sits at absolute position i + offset and sees keys 0..i+offset; the rest are set
    to zero. The 1/sqrt(head size) scale is applied here, so the matmul needs no extra pass.
    """
    BH, Tq, Tk = att.shape
    for bh in range(BH):
        for i in range(Tq):
            row = att[bh, i]
            n = i + offset + 1
            mx = row[0]
            for j in range(1, n):
                if row[j] > mx:
                    mx = row[j]
            s = 0.0
            for j in range(n):
                e = math.exp(scale * (row[j] - mx))
                row[j] = e
                s += e
            r = 1.0 / s
            for j in range(n):
                row[j] *= r
            for j in range(n, Tk):
                row[j] = 0.0


@njit(nogil=True, cache=True, fastmath=True)
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


@njit(nogil=True, cache=True, fastmath=True)
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
            if row[j] > mx:
                mx = row[j]
        y = targets[n]
        zy = row[y] - mx  # kept before exp: exp of it may underflow to 0
        s = 0.0
        for j in range(V):
            e = math.exp(row[j] - mx)
            row[j] = e
            s += e
        losses[n] = math.log(s) - zy
        r = dscale / s
        for j in range(V):
            row[j] *= r
        row[y] -= dscale


@njit(nogil=True, cache=True, fastmath=True)
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


@njit(nogil=True, cache=True, fastmath=True)
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
