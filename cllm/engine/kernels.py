"""Numba kernels for the hot loops that NumPy does not do well, in forward/backward pairs.

Every kernel takes its output buffers as arguments (llm.c style) and works for float32 (training)
and float64 (the gradient checks). Shapes are in the docstrings: N rows (B*T positions), D width,
F MLP width, V vocabulary, hs head size. Matrix products go through NumPy's BLAS: from Python
(np.matmul) in model.py, or called from a kernel (``_gemm``, the fused attention, whose blocks
are too many for a Python call each). The decoder (one token for each of a few streams) does its
own, too small for BLAS.

The gradient rule, for every backward here and in model.py: a backward **writes** the gradients
it computes (whatever the buffer held is overwritten), except where a tensor has two consumers,
whose gradients meet: the residual stream (``layernorm_backward``'s dinp, which the skip
connection has already filled) and the tied token embedding (``embedding_backward``'s dwte,
which the head has already filled). Those two **add**.
"""

from __future__ import annotations

import math
import platform
import sys

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic, models, overload, register_model

from cllm.engine import threads  # noqa: F401  (picks numba's threading layer before it starts)

LN_EPS = 1e-5  # GPT-2's layer_norm_epsilon
GELU_C = math.sqrt(2.0 / math.pi)
LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 0.693145751953125, 1.4286068203094173e-06  # ln 2 = HI + LO, HI exact in 17 bits
# The fused forward's running row max moves only when a block's max exceeds it by more than this
# (natural log units): exps then reach at most e**8 (a T 65536 row sums to under 2e8, far from
# overflow), and most rows skip the rescaling of their output and sum (the scalar exp and a pass
# over the row's output: 5-6% of the forward at T 1024, one thread, with AVX-512; 3% with AVX2).
LAZY_MAX = 8.0

# error_model="numpy": no ZeroDivisionError checks, which would stop loops from vectorizing
jit = njit(nogil=True, cache=True, fastmath=True, error_model="numpy")


@intrinsic
def _bitcast(typingctx, x):
    """Reinterpret the bits of an int64 (int32) as a float64 (float32), or of a float as the int of
    its width: a cast that vectorizes (no conversion, the same bits)."""
    width = x.bitwidth
    if isinstance(x, types.Float):
        out = types.int64 if width == 64 else types.int32
    else:
        out = types.float64 if width == 64 else types.float32

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(out))

    return out(x), codegen


_float_from_bits = _bits_from_float = _bitcast  # the names say which way the bits go


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

        def exp32(x):  # within 5 ulp (4.5 at worst, at the ends of the range)
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
            # 2**k with no float -> int conversion (AVX2 has none to the int64 numba widens to,
            # and scalar conversions kept this loop 2.7x slower there): k + 127 is exact in the
            # low mantissa bits of k + (127 + 2**23); shifted by 23 it is the exponent field
            bits = _bits_from_float(k + np.float32(8388735.0))
            return p * _float_from_bits(np.int32(bits << 23))

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


@njit(inline="always", fastmath=True, error_model="numpy")
def _row_max(row, n):
    """max(row[:n]), n >= 1, of a contiguous row: two running vector maxima (numba does not
    vectorize this reduction; one scalar chain of comparisons waits on each element in turn)."""
    W = _lanes(row)
    c = row[0]
    j = 0
    if n >= 2 * W:
        a, b = _vload(row, 0), _vload(row, W)
        j = 2 * W
        while j + 2 * W <= n:
            a = _vmax(a, _vload(row, j))
            b = _vmax(b, _vload(row, j + W))
            j += 2 * W
        c = _vmax_lanes(_vmax(a, b))
    while j < n:
        v = row[j]
        c = c if c > v else v
        j += 1
    return c


@jit
def attention_softmax_forward(att, lse, scale, offset):
    """Causal softmax in place over att[BH, Tq, Tk] of raw scores q.k; lse[BH, Tq] gets each
    row's log-sum-exp of its scaled scores, from which a backward can make the row again.

    Query row i sits at absolute position i + offset and sees keys 0..i+offset; the rest are set
    to zero. The 1/sqrt(head size) scale is applied here, so the matmul needs no extra pass.
    """
    BH, Tq, Tk = att.shape
    sc = _cast(att[0, 0, 0], scale)
    for bh in range(BH):
        for i in range(Tq):
            row = att[bh, i]
            n = i + offset + 1
            mx = _row_max(row, n)
            b = sc * mx
            s = _cast(mx, 0.0)  # a float64 sum of float32 terms would halve the lanes (1.8x)
            for j in range(n):
                e = _exp(sc * row[j] - b)
                row[j] = e
                s += e
            r = _cast(mx, 1.0) / s
            for j in range(n):
                row[j] *= r
            for j in range(n, Tk):
                row[j] = 0.0
            lse[bh, i] = b + math.log(s)


@jit
def attention_softmax_grad(att, datt, lse, delta, scale, offset, recompute):
    """The backward of attention_softmax_forward for att[BH, Tq, Tk]: datt (grad wrt the
    probabilities) becomes the grad wrt the raw scores, scale p (datt - delta), where delta[BH,
    Tq] = sum_j p datt = dy . y per row. att holds the probabilities the forward kept (zero past
    each row's end), or with ``recompute`` the raw scores q.k, which first become the
    probabilities exp(scale q.k - lse) from the forward's lse[BH, Tq]. Row i sees keys
    0..i+offset."""
    BH, Tq, Tk = att.shape
    sc = _cast(att[0, 0, 0], scale)
    for bh in range(BH):
        for i in range(Tq):
            p, d = att[bh, i], datt[bh, i]
            n = i + offset + 1
            dl = delta[bh, i]
            if recompute:
                m = lse[bh, i]
                for j in range(n):
                    p[j] = _exp(sc * p[j] - m)
                for j in range(n, Tk):
                    p[j] = 0.0
            for j in range(n):
                d[j] = sc * p[j] * (d[j] - dl)
            for j in range(n, Tk):
                d[j] = 0.0


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


# ----------------------------------------------------------------------------------------------
# Fused causal attention: blocks of TILE query rows x TILE keys whose scores never leave the
# core's L2 cache (64 KiB in float32), the products done by NumPy's own BLAS routine called from
# here (blas.gemm), the softmax between them in place. A score matrix written whole by np.matmul
# (a query tile against every key: 1 MiB a head at T 2048) went out to L3, and its product ran
# at 53 GFLOP/s against 71 into a block that stays in L2 (one thread, AVX2). The forward keeps a
# running max and sum per row (online softmax); the backward makes each block's probabilities
# again from the forward's log-sum-exp, key block by key block, and lets the routine add into
# dq, dk and dv where they lie in dqkv (beta = 1). On the diagonal block, row groups of ``diag``
# rows take only the keys they see, so fewer masked scores are computed.

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@intrinsic
def _gemm(typingctx, fn, wide, ta, tb, M, N, K, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
    """C = alpha op(A) op(B) + beta C, row-major, through cblas_?gemm at address ``fn`` (``wide``:
    its integers are 64-bit). A, B and C start at element ao, bo, co of contiguous arrays a, b, c
    (unchecked); ta, tb are _NO_TRANS or _TRANS."""
    sig = types.none(fn, wide, ta, tb, M, N, K, alpha, a, ao, lda, b, bo, ldb, beta, c, co, ldc)

    def codegen(context, builder, sig, args):
        at = sig.args
        fl = context.get_value_type(at[8].dtype)
        i32, i64 = ir.IntType(32), ir.IntType(64)

        def int64(k):
            return context.cast(builder, args[k], at[k], types.int64)

        def real(k):
            return context.cast(builder, args[k], at[k], at[8].dtype)

        ptrs = [_element_ptr(context, builder, at[k], args[k], int64(k + 1)) for k in (8, 11, 15)]

        def call(it):
            n = (lambda k: builder.trunc(int64(k), i32)) if it is i32 else int64
            fnty = ir.FunctionType(
                ir.VoidType(),
                [i32, i32, i32, it, it, it, fl, fl.as_pointer(), it, fl.as_pointer(), it, fl]
                + [fl.as_pointer(), it],
            )
            fp = builder.inttoptr(int64(0), fnty.as_pointer())
            order = ir.Constant(i32, _ROW_MAJOR)
            trans = [builder.trunc(int64(k), i32) for k in (2, 3)]
            builder.call(
                fp,
                [order, *trans, n(4), n(5), n(6), real(7), ptrs[0], n(10), ptrs[1], n(13)]
                + [real(14), ptrs[2], n(17)],
            )

        w = context.cast(builder, args[1], at[1], types.boolean)
        with builder.if_else(cgutils.as_bool_bit(builder, w)) as (then, otherwise):
            with then:
                call(i64)
            with otherwise:
                call(i32)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _qkv_widths(qkv, H):
    """Widths of qkv[N, 3D]: a row (3D), q, k or v (D), and a head (hs = D / H)."""
    D3 = qkv.shape[1]
    return D3, D3 // 3, D3 // 3 // H


@njit(inline="always", fastmath=True, error_model="numpy")
def _head_columns(out, qkv, row0, col0, n, hs):
    """out[hs * n] = columns col0 .. col0 + hs of rows row0 .. row0 + n of qkv, transposed
    ([hs, n]): a product against keys or values stored so runs at 110 GFLOP/s where the
    transposed operand of the strided rows ran at 77 (128 x 128 x 32, one thread, AVX2)."""
    for d in range(hs):  # 26 us for n 1024, hs 32; rows outermost took 100
        for j in range(n):
            out[d * n + j] = qkv[row0 + j, col0 + d]


@jit
def attention_flash_forward(fn, wide, y, lse, qkv, B, T, H, scale, tile, diag, s, o, ml, kt):
    """qkv[B*T, 3D] -> y[B*T, D] (causal attention, heads of D / H), lse[B, H, T] each row's
    log-sum-exp of its scaled scores. Scratch: s[tile * tile] a block's scores, o[tile * hs] a
    tile's output as it builds up, ml[2, tile] its rows' running max and sum, kt[hs * T] a
    head's keys transposed. ``diag`` divides ``tile``."""
    D3, D, hs = _qkv_widths(qkv, H)
    sc = _cast(s[0], scale)
    for b in range(B):
        for h in range(H):
            _head_columns(kt, qkv, b * T, D + h * hs, T, hs)
            for i0 in range(0, T, tile):
                i1 = min(T, i0 + tile)
                for r in range(i1 - i0):
                    ml[0, r] = -np.inf
                    ml[1, r] = 0.0
                for r in range((i1 - i0) * hs):
                    o[r] = 0.0
                for j0 in range(0, i1, tile):  # key blocks; the last is the diagonal one
                    j1 = min(i1, j0 + tile)
                    step = diag if j1 > i0 else i1 - i0
                    for g0 in range(i0, i1, step):
                        g1 = min(i1, g0 + step)
                        n, nk = g1 - g0, min(j1, g1) - j0
                        q0 = (b * T + g0) * D3 + h * hs
                        k0 = (b * T + j0) * D3 + D + h * hs
                        _gemm(fn, wide, _NO_TRANS, _NO_TRANS, n, nk, hs, sc, qkv, q0, D3, kt, j0, T,
                              0.0, s, 0, nk)  # fmt: skip
                        for rr in range(n):
                            r = g0 - i0 + rr
                            row = s[rr * nk : (rr + 1) * nk]
                            see = min(nk, g0 + rr - j0 + 1)  # keys j0 .. the row's own
                            m0 = ml[0, r]
                            m1 = _row_max(row, see)
                            if m1 <= m0 + _cast(m1, LAZY_MAX):
                                m1 = m0  # keep the row's reference: no rescaling
                            t = _cast(m1, 0.0)
                            for j in range(see):
                                e = _exp(row[j] - m1)
                                row[j] = e
                                t += e
                            for j in range(see, nk):
                                row[j] = 0.0
                            if m1 != m0:  # the row's earlier terms, to the new reference
                                fix = _exp(m0 - m1)
                                ml[0, r] = m1
                                ml[1, r] *= fix
                                for d in range(hs):
                                    o[r * hs + d] *= fix
                            ml[1, r] += t
                        _gemm(fn, wide, _NO_TRANS, _NO_TRANS, n, hs, nk, 1.0, s, 0, nk, qkv, k0 + D,
                              D3, 1.0, o, (g0 - i0) * hs, hs)  # fmt: skip
                for r in range(i1 - i0):
                    inv = _cast(s[0], 1.0) / ml[1, r]
                    for d in range(hs):
                        y[b * T + i0 + r, h * hs + d] = o[r * hs + d] * inv
                    lse[b, h, i0 + r] = ml[0, r] + math.log(ml[1, r])


@jit
def attention_flash_backward(fn, wide, dqkv, dy, y, lse, qkv, B, T, H, scale, tile, diag, s, dp,
                             delta, kt, vt):  # fmt: skip
    """dqkv[B*T, 3D] (written) from dy[B*T, D], the forward's output y and lse. Scratch:
    s and dp[tile * tile] a block's probabilities and their gradients, delta[T], kt and vt
    [hs * tile] a key block's keys and values transposed."""
    D3, D, hs = _qkv_widths(qkv, H)
    sc = _cast(s[0], scale)
    for b in range(B):
        for h in range(H):
            for i in range(T):  # sum_j p_ij dp_ij = dy . y, per row
                acc = _cast(s[0], 0.0)
                for d in range(hs):
                    acc += dy[b * T + i, h * hs + d] * y[b * T + i, h * hs + d]
                delta[i] = acc
            for j0 in range(0, T, tile):  # a key block, against every query tile that sees it
                j1 = min(T, j0 + tile)
                k0 = (b * T + j0) * D3 + D + h * hs
                _head_columns(kt, qkv, b * T + j0, D + h * hs, j1 - j0, hs)
                _head_columns(vt, qkv, b * T + j0, 2 * D + h * hs, j1 - j0, hs)
                first = True
                for i0 in range(j0, T, tile):
                    i1 = min(T, i0 + tile)
                    step = diag if j1 > i0 else i1 - i0
                    # row groups last first: the last sees every key of the block, so the
                    # first product into the block's dk and dv (beta 0) covers all of them
                    g0 = i0 + ((i1 - i0 - 1) // step) * step
                    while g0 >= i0:
                        g1 = min(i1, g0 + step)
                        n, nk = g1 - g0, min(j1, g1) - j0
                        q0 = (b * T + g0) * D3 + h * hs
                        y0 = (b * T + g0) * D + h * hs
                        _gemm(fn, wide, _NO_TRANS, _NO_TRANS, n, nk, hs, sc, qkv, q0, D3, kt, 0,
                              j1 - j0, 0.0, s, 0, nk)  # fmt: skip
                        _gemm(fn, wide, _NO_TRANS, _NO_TRANS, n, nk, hs, 1.0, dy, y0, D, vt, 0,
                              j1 - j0, 0.0, dp, 0, nk)  # fmt: skip
                        for r in range(n):
                            row, drow = s[r * nk : (r + 1) * nk], dp[r * nk : (r + 1) * nk]
                            see = min(nk, g0 + r - j0 + 1)
                            m, dl = lse[b, h, g0 + r], delta[g0 + r]
                            for j in range(see):
                                p = _exp(row[j] - m)
                                row[j] = p
                                drow[j] = p * (drow[j] - dl)
                            for j in range(see, nk):
                                row[j] = 0.0
                                drow[j] = 0.0
                        beta = 0.0 if first else 1.0
                        _gemm(fn, wide, _TRANS, _NO_TRANS, nk, hs, n, 1.0, s, 0, nk, dy, y0, D,
                              beta, dqkv, k0 + D, D3)  # fmt: skip
                        _gemm(fn, wide, _TRANS, _NO_TRANS, nk, hs, n, sc, dp, 0, nk, qkv, q0, D3,
                              beta, dqkv, k0, D3)  # fmt: skip
                        _gemm(fn, wide, _NO_TRANS, _NO_TRANS, n, hs, nk, sc, dp, 0, nk, qkv, k0, D3,
                              0.0 if j0 == 0 else 1.0, dqkv, q0, D3)  # fmt: skip
                        first = False
                        g0 -= step


@jit
def crossentropy_forward_backward(logits, targets, losses, dscale):
    """Fused softmax + cross-entropy over logits[N,V] with targets[N].

    Writes each position's loss into losses[N] and overwrites logits with the gradient of
    dscale * sum(losses) (dscale = 1/N for the mean), so the [N,V] buffer is reused for dlogits.
    """
    N, V = logits.shape
    for n in range(N):
        row = logits[n]
        mx = _row_max(row, V)
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
    """dwte[V,D] += scatter of dout[B,T,D] by token idx[B,T] (the head wrote it first);
    dwpe[C,D] = sum over the batch, rows from T on zero."""
    B, T, D = dout.shape
    dwpe[:] = 0.0
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


# ----------------------------------------------------------------------------------------------
# Decoding: one new token for each of n streams, the whole model in one call (at these sizes
# NumPy's per-call overhead, not arithmetic, would be the cost). The streams may sit at different
# positions of their own key-value cache slots. Weights come in one of two formats, told apart
# by the dtype of the matrix buffer (numba compiles one version per format):
#   float32/64 [in, out]   the training weights themselves;
#   int8       [out, in]   one float32 scale per output channel (row): w = q * scale, turned
#                          into floats in registers inside the dot products.
# With float weights and 2 or more streams, each matrix product runs in register tiles over a
# copy of the matrix in panels (``_linear_panels``): NumPy's BLAS, at 8 rows, ran at a quarter
# of its peak (it packs the whole weight matrix again on every call), and a row-at-a-time loop
# is bound by its loads and stores. Every kernel here sums each output in one order whatever
# the number of rows, so a stream's logits in a batch are bit for bit those it gets alone (on
# one thread; see GPT._step_columns for several).

# A block's tensors in the decoder's offset tables (built from config.param_shapes by name).
DECODE_BLOCK = (
    "ln_1.weight",
    "ln_1.bias",
    "attn.c_attn.weight",
    "attn.c_attn.bias",
    "attn.c_proj.weight",
    "attn.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
)
LN1_W, LN1_B, ATTN_W, ATTN_B, PROJ_W, PROJ_B, LN2_W, LN2_B, FC_W, FC_B, FCP_W, FCP_B = range(12)


# 256-bit vectors (8 float32 or 4 float64 lanes) for the batched decoder's register tiles: LLVM
# does not vectorise the outer loop of a matrix product, so the tile below names its vectors.
# Each is an LLVM vector value that stays in a register; fmuladd fuses where the CPU has FMA.


class _Vec(types.Type):
    def __init__(self, dtype):
        self.dtype, self.lanes = dtype, 256 // dtype.bitwidth
        super().__init__(name=f"vec{self.lanes}x{dtype}")


@register_model(_Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        el = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(el, fe_type.lanes))


def _element_ptr(context, builder, arrty, arr, i):
    return builder.gep(context.make_array(arrty)(context, builder, arr).data, [i])


@intrinsic
def _vload(typingctx, arr, i):
    """arr[i : i + lanes] of a contiguous 1-D array, as a vector (unaligned, unchecked)."""
    vt = _Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        vp = builder.bitcast(ptr, context.get_value_type(vt).as_pointer())
        return builder.load(vp, align=vt.dtype.bitwidth // 8)

    return vt(arr, i), codegen


@intrinsic
def _vstore(typingctx, arr, i, v):
    """arr[i : i + lanes] = v."""

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        vp = builder.bitcast(ptr, args[2].type.as_pointer())
        builder.store(args[2], vp, align=sig.args[2].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, i, v), codegen


@intrinsic
def _vsplat(typingctx, x):
    """A vector of lanes copies of the float x."""
    vt = _Vec(x)

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(vt)
        undef = ir.Constant(ty, ir.Undefined)
        v = builder.insert_element(undef, args[0], ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(v, undef, zeros)

    return vt(x), codegen


@intrinsic
def _vzero(typingctx, arr):
    """A vector of zeros in arr's element type."""
    vt = _Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr), codegen


@intrinsic
def _vfma(typingctx, a, b, c):
    """a * b + c, lane by lane (one rounding where the CPU has FMA, as fastmath's contraction
    gives the scalar loops: the tile's sums round exactly as the one-row loop's)."""

    def codegen(context, builder, sig, args):
        ty = args[0].type
        name = f"llvm.fmuladd.v{ty.count}f{sig.args[0].dtype.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3), name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


def _fold_lanes(builder, v, n, combine):
    """combine(lo, hi) over the halves of vector v (n lanes) until one lane is left: its value."""
    i32 = ir.IntType(32)
    while n > 1:
        n //= 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, n), list(range(n))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, n), list(range(n, 2 * n))))
        v = combine(lo, hi)
    return builder.extract_element(v, ir.Constant(i32, 0))


@intrinsic
def _vsum(typingctx, v):
    """The sum of v's lanes, in one fixed order (halves added until one lane is left)."""

    def codegen(context, builder, sig, args):
        return _fold_lanes(builder, args[0], sig.args[0].lanes, builder.fadd)

    return v.dtype(v), codegen


def _larger(builder, a, b):
    """a where a > b, else b, lane by lane: as the scalar comparison ``a if a > b else b``."""
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


@intrinsic
def _vmax(typingctx, a, b):
    """The larger of a and b, lane by lane (a where a > b, else b: as the scalar comparison)."""

    def codegen(context, builder, sig, args):
        return _larger(builder, *args)

    return a(a, b), codegen


@intrinsic
def _vmax_lanes(typingctx, v):
    """The largest of v's lanes."""

    def codegen(context, builder, sig, args):
        return _fold_lanes(builder, args[0], sig.args[0].lanes, lambda a, b: _larger(builder, a, b))

    return v.dtype(v), codegen


@intrinsic
def _prefetch(typingctx, arr, i):
    """Ask for the cache line of arr[i] in the level-2 cache ahead of its use (a hint: it
    never faults)."""

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, i), codegen


@intrinsic
def _lanes(typingctx, arr):
    """How many of arr's elements a vector holds (a constant)."""
    n = 256 // arr.dtype.bitwidth

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(64), n)

    return types.intp(arr), codegen


# A barrier for the threads that share one decode step (``decode_part``): atomics on an int64
# array, which numba's API lacks, as LLVM instructions.
BARRIER_SIZE = 16  # int64s: the arrival count in the first cache line, the abort flag in the next
BARRIER_ABORT = 8
# spins (a pause each: ~35 ns on Zen 3) before each further wait gives the core away (sched_yield)
SPINS = 300


@intrinsic
def _atomic_add(typingctx, arr, i, v):
    """arr[i] += v as one atomic step (sequentially consistent); returns the value before."""

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        return builder.atomic_rmw("add", ptr, val, "seq_cst")

    return arr.dtype(arr, i, v), codegen


@intrinsic
def _atomic_load(typingctx, arr, i):
    """arr[i], read atomically with acquire order (what another thread wrote before its
    atomic add is seen after this read)."""

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", sig.args[0].dtype.bitwidth // 8)

    return arr.dtype(arr, i), codegen


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_POSIX = sys.platform != "win32"


@intrinsic
def _spin_wait(typingctx, long_wait):
    """One turn of a spin loop: the CPU's pause hint (x86), and with long_wait true, also
    sched_yield (POSIX), so that a partner thread the OS has descheduled gets the core."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
            )
            builder.call(fn, [])
        if _POSIX:
            with builder.if_then(args[0]):
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield"
                )
                builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(long_wait), codegen


@njit(nogil=True, cache=True)
def _barrier(bar, k, parts):
    """The (k+1)-th barrier of ``parts`` threads: returns k + 1 once all have arrived (at
    once with parts == 1). bar[0] counts arrivals over the whole step, so a barrier needs no
    reset and a fast thread cannot run into the next one's count; bar[BARRIER_ABORT] != 0 (a
    partner that failed) releases every wait."""
    if parts == 1:
        return k
    k += 1
    _atomic_add(bar, 0, 1)
    target = parts * k
    spins = 0
    while _atomic_load(bar, 0) < target and _atomic_load(bar, BARRIER_ABORT) == 0:
        spins += 1
        _spin_wait(spins > SPINS)
    return k


@njit(nogil=True, cache=True)
def spin_until(flag, i, value, spins):
    """Wait, spinning without the GIL, until flag[i] >= value (True), or give up after
    ``spins`` turns of the CPU's pause hint (False): how a thread of ``threads.Team`` waits a
    short while for the next round before it sleeps."""
    for _ in range(spins):
        if _atomic_load(flag, i) >= value:
            return True
        _spin_wait(False)
    return _atomic_load(flag, i) >= value


@njit(nogil=True, cache=True)
def signal(flag, i):
    """flag[i] += 1, atomically, seen by ``spin_until`` on another thread."""
    _atomic_add(flag, i, 1)


PANEL_LANES = 2  # vectors of outputs one panel holds: a register tile's columns


@njit(nogil=True, fastmath=True, error_model="numpy")
def _linear_panels(out, x, P, W, b, c0, c1, kf, vf, ranges):
    """out[n, c0:c1] of out[n, O] = x[n, I] @ W[I, O] + b for n >= 2 rows, c0 a multiple of
    C = PANEL_LANES vectors (16 float32), c1 one too or O. P holds W's first O - O % C columns
    in panels of C columns, each panel its I rows one after another ([O // C, I, C] flat,
    ``quant.pack_panels``): the loop over i streams a panel from memory in order. W (flat,
    [I * O], the training layout) serves the columns past the last whole panel.

    Register tiles of 4 rows by 2 vectors of outputs: each weight loaded once serves 4 rows, so
    the loop runs at the FMA units' pace; a panel (I * C weights, 16 KiB at I 256) is still in
    the level-1 or level-2 cache when the next 4 rows read it. Every output is b[o] plus the
    x[r, i] W[i, o] in the order of i, each fused, as the one-row loop in ``_linear`` sums it:
    a row's result is the same whether it runs alone or in a batch, and whatever the columns
    beside it. A last tile of fewer than 4 rows repeats its last row (the copies write the same
    values).

    ranges[m, 2]: element ranges of kf and vf (the next layer's keys and values that this
    thread's attention will read) to ask the cache for, a share with each panel: decoding
    streams reads them from memory, and meanwhile the loop here is busy with the FMA units."""
    n, O = out.shape
    I = x.shape[1]
    VW = _lanes(b)
    C = PANEL_LANES * VW
    Oc = O - O % C
    e = max(c0, min(c1, Oc))  # columns c0..e in whole panels, e..c1 one by one
    line = 64 // kf.itemsize
    lines = 0
    for m in range(ranges.shape[0]):
        lines += (ranges[m, 1] - ranges[m, 0] + line - 1) // line
    share = (lines + max(1, (e - c0) // C) - 1) // max(1, (e - c0) // C)
    rm, re = 0, ranges[0, 0] if ranges.shape[0] else 0
    for c in range(c0, e, C):
        for _ in range(share):
            if rm >= ranges.shape[0]:
                break
            _prefetch(kf, re)
            _prefetch(vf, re)
            re += line
            if re >= ranges[rm, 1]:
                rm += 1
                if rm < ranges.shape[0]:
                    re = ranges[rm, 0]
        base = c * I  # panel c // C starts at (c // C) * I * C
        for r in range(0, n, 4):
            r1, r2, r3 = min(r + 1, n - 1), min(r + 2, n - 1), min(r + 3, n - 1)
            o0, o1, o2, o3 = out[r], out[r1], out[r2], out[r3]
            a00, a01 = _vload(b, c), _vload(b, c + VW)
            a10, a11, a20, a21, a30, a31 = a00, a01, a00, a01, a00, a01
            x0, x1, x2, x3 = x[r], x[r1], x[r2], x[r3]
            k = base
            ahead = r == 0 and c + C < e  # the first rows ask for the next panel meanwhile
            for i in range(I):
                if ahead:
                    _prefetch(P, k + I * C)
                w0, w1 = _vload(P, k), _vload(P, k + VW)
                s = _vsplat(x0[i])
                a00, a01 = _vfma(s, w0, a00), _vfma(s, w1, a01)
                s = _vsplat(x1[i])
                a10, a11 = _vfma(s, w0, a10), _vfma(s, w1, a11)
                s = _vsplat(x2[i])
                a20, a21 = _vfma(s, w0, a20), _vfma(s, w1, a21)
                s = _vsplat(x3[i])
                a30, a31 = _vfma(s, w0, a30), _vfma(s, w1, a31)
                k += C
            _vstore(o0, c, a00)
            _vstore(o0, c + VW, a01)
            _vstore(o1, c, a10)
            _vstore(o1, c + VW, a11)
            _vstore(o2, c, a20)
            _vstore(o2, c + VW, a21)
            _vstore(o3, c, a30)
            _vstore(o3, c + VW, a31)
    for r in range(n):  # the outputs past the last whole panel, as the one-row loop
        o_r = out[r]
        for o in range(e, c1):
            o_r[o] = b[o]
        for i in range(I):
            xi = x[r, i]
            for o in range(e, c1):
                o_r[o] += xi * W[i * O + o]


def _linear(out, x, w, s, woff, soff, b, pw, poff, c0, c1, kf, vf, ranges):
    """out[n, c0:c1] of out[n, O] = x[n, I] @ W + b[O] for the weight format of w (see above);
    the matrix starts at w[woff], its scales at s[soff]; c0 a multiple of 2 vectors (16 float32),
    c1 one too or O. Float weights and 2 or more rows: the matrix's panels start at pw[poff]
    (``_linear_panels``), which asks for the keys and values in ``ranges`` meanwhile."""


@overload(_linear, jit_options={"fastmath": True, "error_model": "numpy"})
def _linear_ol(out, x, w, s, woff, soff, b, pw, poff, c0, c1, kf, vf, ranges):
    if w.dtype == types.int8:

        def int8(out, x, w, s, woff, soff, b, pw, poff, c0, c1, kf, vf, ranges):
            n, O = out.shape
            I = x.shape[1]
            W = w[woff : woff + O * I].reshape(O, I)
            for o in range(c0, c1):
                row, sc = W[o], s[soff + o]
                for r in range(n):
                    out[r, o] = _dot(x[r], row) * sc + b[o]

        return int8

    def dense(out, x, w, s, woff, soff, b, pw, poff, c0, c1, kf, vf, ranges):
        n, O = out.shape
        I = x.shape[1]
        if n > 1:
            P = pw[poff : poff + (O - O % (PANEL_LANES * _lanes(b))) * I]
            _linear_panels(out, x, P, w[woff : woff + I * O], b[:O], c0, c1, kf, vf, ranges)
            return
        for r in range(n):
            out[r][c0:c1] = b[c0:c1]
        for i in range(I):
            row = w[woff + i * O + c0 : woff + i * O + c1]  # contiguous slices: vector loops
            for r in range(n):
                xi = x[r, i]
                o_r = out[r][c0:c1]
                for o in range(c1 - c0):
                    o_r[o] += xi * row[o]

    return dense


@jit
def _layernorm_rows(out, x, w, b):
    """out[n, D] = normalize(x[n, D]) * w + b, row by row (no statistics kept)."""
    n, D = x.shape
    for r in range(n):
        xr, o = x[r], out[r]
        m = 0.0
        for i in range(D):
            m += xr[i]
        m /= D
        var = 0.0
        for i in range(D):
            var += (xr[i] - m) * (xr[i] - m)
        s = 1.0 / math.sqrt(var / D + LN_EPS)
        for i in range(D):
            o[i] = (xr[i] - m) * s * w[i] + b[i]


@jit
def _write_kv(qkv, kc, vc, slots, pos, u0, u1):
    """The keys and values of the (row, head) pairs u0..u1 (see ``_attend_units``) into the
    cache: row r's at position pos[r] of slot slots[r]."""
    _, H, _, hs = kc.shape
    D = H * hs
    for u in range(u0, u1):
        r, hd = u // H, u % H
        kc[slots[r], hd, pos[r], :] = qkv[r, D + hd * hs : D + (hd + 1) * hs]
        vc[slots[r], hd, pos[r], :] = qkv[r, 2 * D + hd * hs : 2 * D + (hd + 1) * hs]


@jit
def _attend_units(y, qkv, kc, vc, slots, pos, att, u0, u1):
    """The attention of the (row, head) pairs u0..u1, pair u = row u // H, head u % H (two
    threads that share a step out each attend their own pairs): row r's query attends to keys
    0..pos[r] of cache slot slots[r], every row's key and value already written
    (``_write_kv``). Rows may share a slot at consecutive positions (a prompt: each attends to
    the ones before it). qkv[n, 3D] -> y[n, D]; kc, vc [S, H, C, hs]; att[C] scratch. A row's
    result depends only on its slot's keys and values up to its position, not on the other
    rows. A head size that is a multiple of the vector width runs in vectors
    (``_attend_head``)."""
    _, H, _, hs = kc.shape
    scale = 1.0 / math.sqrt(hs)
    vectors = hs % _lanes(att) == 0
    for u in range(u0, u1):
        r, hd = u // H, u % H
        sl, p = slots[r], pos[r]
        q = qkv[r, hd * hs : (hd + 1) * hs]
        kh, vh = kc[sl, hd], vc[sl, hd]
        yh = y[r, hd * hs : (hd + 1) * hs]
        if vectors:
            _attend_head(yh, q, kh, vh, p, att, scale)
            continue
        mx = -1e30
        for j in range(p + 1):
            t = 0.0
            for i in range(hs):
                t += q[i] * kh[j, i]
            att[j] = t * scale
            mx = max(mx, att[j])
        tot = 0.0
        for j in range(p + 1):
            att[j] = _exp(att[j] - mx)
            tot += att[j]
        yh[:] = 0.0
        for j in range(p + 1):
            a = att[j] / tot
            for i in range(hs):
                yh[i] += a * vh[j, i]


@jit
def _attend_head(yh, q, kh, vh, p, att, scale):
    """One head of one row: yh[hs] = softmax(q . kh[0..p] * scale) @ vh[0..p], hs a multiple
    of the vector width. The scores go 4 keys at a time (4 independent sums, each weight of q
    loaded once for them); the weighted sum of the values keeps up to 4 vectors of outputs in
    registers, with the even and the odd keys in separate sums (added at the end), so that no
    sum waits on the one before it."""
    hs = q.size
    VW = _lanes(att)
    n = p + 1
    mx = -1e30
    j = 0
    while j + 4 <= n:
        k0, k1, k2, k3 = kh[j], kh[j + 1], kh[j + 2], kh[j + 3]
        a0 = a1 = a2 = a3 = _vzero(att)
        for c in range(0, hs, VW):
            qv = _vload(q, c)
            a0 = _vfma(qv, _vload(k0, c), a0)
            a1 = _vfma(qv, _vload(k1, c), a1)
            a2 = _vfma(qv, _vload(k2, c), a2)
            a3 = _vfma(qv, _vload(k3, c), a3)
        t0, t1 = _vsum(a0) * scale, _vsum(a1) * scale
        t2, t3 = _vsum(a2) * scale, _vsum(a3) * scale
        att[j], att[j + 1], att[j + 2], att[j + 3] = t0, t1, t2, t3
        mx = max(mx, max(max(t0, t1), max(t2, t3)))
        j += 4
    for i in range(j, n):  # the keys past the last 4
        ki = kh[i]
        acc = _vzero(att)
        for c in range(0, hs, VW):
            acc = _vfma(_vload(q, c), _vload(ki, c), acc)
        t = _vsum(acc) * scale
        att[i] = t
        mx = max(mx, t)
    tot = 0.0
    for j in range(n):
        e = _exp(att[j] - mx)
        att[j] = e
        tot += e
    inv = 1.0 / tot
    one = _vsplat(_cast(att[0], 1.0))  # fma(1, a, b): an exact a + b
    c = 0
    while c < hs:
        if c + 4 * VW <= hs:
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = _vzero(att)
            j = 0
            while j + 2 <= n:
                s, u = _vsplat(att[j]), _vsplat(att[j + 1])
                v0, v1 = vh[j], vh[j + 1]
                a0 = _vfma(s, _vload(v0, c), a0)
                a1 = _vfma(s, _vload(v0, c + VW), a1)
                a2 = _vfma(s, _vload(v0, c + 2 * VW), a2)
                a3 = _vfma(s, _vload(v0, c + 3 * VW), a3)
                b0 = _vfma(u, _vload(v1, c), b0)
                b1 = _vfma(u, _vload(v1, c + VW), b1)
                b2 = _vfma(u, _vload(v1, c + 2 * VW), b2)
                b3 = _vfma(u, _vload(v1, c + 3 * VW), b3)
                j += 2
            if j < n:
                s, v0 = _vsplat(att[j]), vh[j]
                a0 = _vfma(s, _vload(v0, c), a0)
                a1 = _vfma(s, _vload(v0, c + VW), a1)
                a2 = _vfma(s, _vload(v0, c + 2 * VW), a2)
                a3 = _vfma(s, _vload(v0, c + 3 * VW), a3)
            _vstore(yh, c, _vfma(one, a0, b0))
            _vstore(yh, c + VW, _vfma(one, a1, b1))
            _vstore(yh, c + 2 * VW, _vfma(one, a2, b2))
            _vstore(yh, c + 3 * VW, _vfma(one, a3, b3))
            c += 4 * VW
        else:  # fewer than 4 vectors left: one at a time
            a0 = b0 = _vzero(att)
            j = 0
            while j + 2 <= n:
                a0 = _vfma(_vsplat(att[j]), _vload(vh[j], c), a0)
                b0 = _vfma(_vsplat(att[j + 1]), _vload(vh[j + 1], c), b0)
                j += 2
            if j < n:
                a0 = _vfma(_vsplat(att[j]), _vload(vh[j], c), a0)
            _vstore(yh, c, _vfma(one, a0, b0))
            c += VW
    for i in range(hs):
        yh[i] *= inv


@jit
def decode_step(
    tokens, slots, pos, wpe, blocks, offs, wq, woffs, sq, soffs, pw, poffs, head, head_s,
    lnf_w, lnf_b, k_cache, v_cache, x, ln, qkv, y, h, att, logits,
):  # fmt: skip
    """Stream r's token tokens[r] at position pos[r] of cache slot slots[r], through the model:
    logits[n, V] for the next token; the caches gain each stream's key and value. Rows may
    also be a prompt's tokens, one slot at consecutive positions; logits [m, V] with m < n
    takes the last m rows' only.

    head[V, D] (float, or int8 with row scales head_s[V]) is the tied token embedding and head;
    wpe[C, D] the position embedding. blocks[L, S]: each block's
    float tensors, at offs[k] for DECODE_BLOCK[k]. wq[L, Q], sq[L, R]: each block's matrices in
    their format, at woffs[k] and scales at soffs[k] (for float weights wq is blocks, woffs is
    offs). pw[L, P]: each block's float matrices in panels at poffs[k] (``_linear_panels``;
    read for 2 or more rows only, so one row may pass an empty [L, 0]). k_cache, v_cache
    [L, S, H, C, hs]; x, ln, y [n, D], qkv [n, 3D], h [n, F], att [C] are scratch.
    """
    bar = np.zeros(BARRIER_SIZE, np.int64)
    decode_part(
        0, 1, bar, tokens, slots, pos, wpe, blocks, offs, wq, woffs, sq, soffs, pw, poffs,
        pw[0, :0], head, head_s, lnf_w, lnf_b, k_cache, v_cache, x, ln, att, qkv, y, ln, h,
        logits,
    )  # fmt: skip


@jit
def _cols(O, part, parts, C):
    """Part ``part`` of ``parts`` of the columns 0..O, in whole groups of C (the last part
    takes the rest)."""
    m = O // C
    c0 = m * part // parts * C
    c1 = m * (part + 1) // parts * C if part + 1 < parts else O
    return c0, c1


@jit
def _units(pos, H, part, parts):
    """Part ``part`` of ``parts`` of the (row, head) pairs u = r * H + h, pairs in order, cut
    where each part's attention reads about as many keys (pos[r] + 1 for each pair of row r)."""
    total = 0
    for r in range(pos.size):
        total += (pos[r] + 1) * H
    lo, hi = total * part // parts, total * (part + 1) // parts
    u0, u1, cum = pos.size * H, pos.size * H, 0
    for u in range(pos.size * H):
        if cum >= lo and u0 == pos.size * H:
            u0 = u
        if cum >= hi and u1 == pos.size * H:
            u1 = u
        cum += pos[u // H] + 1
    if part + 1 == parts:
        u1 = pos.size * H
    return min(u0, u1), u1


@jit
def decode_part(
    part, parts, bar, tokens, slots, pos, wpe, blocks, offs, wq, woffs, sq, soffs, pw, poffs,
    hp, head, head_s, lnf_w, lnf_b, k_cache, v_cache, x, ln, att, qkv, y, o, h, logits,
):  # fmt: skip
    """``decode_step`` shared out among ``parts`` threads, each calling it at once with its own
    ``part`` (0..parts-1), the same barrier ``bar`` (BARRIER_SIZE zeros before the step) and
    the same qkv, y, o [n, D], h and logits; x, ln [n, D] and att [C] are each thread's own.

    Each thread computes the residual stream x and its layer norms for every row (small, the
    same values in both), and of every matrix product and of the head only its part of the
    output columns, for all the rows: each thread reads only its part of the weights. The
    attention goes by (row, head) pairs (``_units``); a thread writes the keys and values of its
    own pairs. They meet at a barrier (``_barrier``) wherever one reads what another wrote: six
    a layer. Every output is summed in the order of one thread's step, so the logits are bit
    for bit those of ``decode_step``; except where ``hp`` holds the head in panels
    (``quant.pack_panels`` of head.T; empty: the head's rows are read as they are): two or more
    rows' logits then come from the panel kernel, each logit summed over the model width in
    order rather than as ``_head_float``'s dot products, which differ by rounding. With parts ==
    1 there are no barriers, and o may be ln.
    """
    n, D = x.shape
    F = h.shape[1]
    L = blocks.shape[0]
    V = logits.shape[1]
    for r in range(n):
        t = tokens[r]
        sc = head_s[t] if head_s.size > 1 else head_s[0]  # int8 rows have scales
        for i in range(D):
            x[r, i] = head[t, i] * sc + wpe[pos[r], i]
    _, S, H, C, hs = k_cache.shape
    u0, u1 = _units(pos, H, part, parts)
    CW = PANEL_LANES * _lanes(x)  # the columns of one register tile (and panel)
    a0, a1 = _cols(3 * D, part, parts, CW)
    p0, p1 = _cols(D, part, parts, CW)
    f0, f1 = _cols(F, part, parts, CW)
    v0, v1 = _cols(V, part, parts, CW if hp.size else 2)
    # the keys and values this thread's attention reads, as ranges of a layer's flat cache:
    # the MLP of layer l asks for those of layer l + 1 (several rows only)
    none = np.empty((0, 2), np.int64)
    ranges = np.empty((u1 - u0 if n > 1 else 0, 2), np.int64)
    for m in range(ranges.shape[0]):
        u = u0 + m
        base = (slots[u // H] * H + u % H) * C * hs
        ranges[m, 0], ranges[m, 1] = base, base + (pos[u // H] + 1) * hs
    k = 0  # barriers passed
    for l in range(L):
        blk, q, sc, pl = blocks[l], wq[l], sq[l], pw[l]
        kf, vf = k_cache[l].reshape(-1), v_cache[l].reshape(-1)
        plan = ranges if l + 1 < L else none
        kn, vn = k_cache[min(l + 1, L - 1)].reshape(-1), v_cache[min(l + 1, L - 1)].reshape(-1)
        _layernorm_rows(ln, x, blk[offs[LN1_W] :], blk[offs[LN1_B] :])
        _linear(qkv, ln, q, sc, woffs[ATTN_W], soffs[ATTN_W], blk[offs[ATTN_B] :], pl,
                poffs[ATTN_W], a0, a1, kf, vf, none)  # fmt: skip
        k = _barrier(bar, k, parts)
        _write_kv(qkv, k_cache[l], v_cache[l], slots, pos, u0, u1)
        k = _barrier(bar, k, parts)  # a prompt's rows read the keys of the rows before them
        _attend_units(y, qkv, k_cache[l], v_cache[l], slots, pos, att, u0, u1)
        k = _barrier(bar, k, parts)
        _linear(o, y, q, sc, woffs[PROJ_W], soffs[PROJ_W], blk[offs[PROJ_B] :], pl,
                poffs[PROJ_W], p0, p1, kf, vf, none)  # fmt: skip
        k = _barrier(bar, k, parts)
        x += o
        _layernorm_rows(ln, x, blk[offs[LN2_W] :], blk[offs[LN2_B] :])
        _linear(h, ln, q, sc, woffs[FC_W], soffs[FC_W], blk[offs[FC_B] :], pl, poffs[FC_W],
                f0, f1, kn, vn, plan)  # fmt: skip
        for r in range(n):
            hr = h[r][f0:f1]  # a contiguous slice: the loop runs in vectors (a range does not)
            for i in range(f1 - f0):
                v = hr[i]
                hr[i] = v * _gelu_gates(v)[0]
        k = _barrier(bar, k, parts)
        _linear(o, h, q, sc, woffs[FCP_W], soffs[FCP_W], blk[offs[FCP_B] :], pl,
                poffs[FCP_W], p0, p1, kn, vn, none)  # fmt: skip
        k = _barrier(bar, k, parts)
        x += o
    _layernorm_rows(ln, x, lnf_w, lnf_b)
    m = logits.shape[0]
    if hp.size == 0 or m < 2:
        _head(logits, ln[n - m :], head, head_s, v0, v1)
        return
    # the head in panels, as the block matrices (no bias: zeros); the columns past the last
    # whole panel (V % CW of them, the last part's) by the rows of head
    Vc = V - V % CW
    e = min(v1, Vc)
    if e > v0:
        _linear_panels(logits, ln[n - m :], hp, hp, np.zeros(V, x.dtype), v0, e, hp, hp, none)
    if v1 > max(v0, Vc):
        _head(logits, ln[n - m :], head, head_s, max(v0, Vc), v1)


@jit
def decode_part_signal(
    flag, done, part, parts, bar, tokens, slots, pos, wpe, blocks, offs, wq, woffs, sq, soffs,
    pw, poffs, hp, head, head_s, lnf_w, lnf_b, k_cache, v_cache, x, ln, att, qkv, y, o, h,
    logits,
):  # fmt: skip
    """``decode_part``, then flag[done] += 1 (``signal``: a ``threads.Team`` helper's part says
    it has finished before it takes the GIL back)."""
    decode_part(
        part, parts, bar, tokens, slots, pos, wpe, blocks, offs, wq, woffs, sq, soffs, pw, poffs,
        hp, head, head_s, lnf_w, lnf_b, k_cache, v_cache, x, ln, att, qkv, y, o, h, logits,
    )  # fmt: skip
    signal(flag, done)


@njit(inline="always", fastmath=True, error_model="numpy")
def _dot(x, w):
    """x . w in the float type of x, w float or int8 (converted in registers)."""
    acc = _cast(x[0], 0.0)
    for i in range(x.size):
        acc += x[i] * _cast(acc, w[i])
    return acc


def _head(logits, x, head, s, v0, v1):
    """logits[n, v0:v1] of logits[n, V] = x[n, D] @ head[V, D].T, head float or int8 with row
    scales s[V]; v0 even."""


@overload(_head, jit_options={"fastmath": True, "error_model": "numpy"})
def _head_ol(logits, x, head, s, v0, v1):
    if head.dtype != types.int8:
        return lambda logits, x, head, s, v0, v1: _head_float(logits, x, head, v0, v1)

    def impl(logits, x, head, s, v0, v1):
        n, V = logits.shape
        for v in range(v0, v1):
            row = head[v]
            for r in range(n):
                logits[r, v] = _dot(x[r], row) * s[v]

    return impl


@njit(inline="always", nogil=True, fastmath=True, error_model="numpy")
def _head_sum(a0, a1, x, w, D2, D):
    """One logit from its two vector sums (even and odd pairs of vectors): added lane by lane,
    the lanes summed (one ``_vsum``), then the tail."""
    t = _vsum(_vfma(_vsplat(_cast(x[0], 1.0)), a0, a1))  # fma(1, a0, a1): exactly a0 + a1
    for i in range(D2, D):
        t += x[i] * w[i]
    return t


@njit(nogil=True, fastmath=True, error_model="numpy")
def _head_float(logits, x, head, v0, v1):
    """logits[n, v0:v1] of logits[n, V] = x[n, D] @ head[V, D].T for float weights, v0 even
    (head rows v0..v1 only: two threads that share a step out each read their own rows). Every
    logit is summed in one
    order whatever n: vectors 0, 2, 4.. of the row into one sum, 1, 3, 5.. into another, the
    two added and their lanes summed (``_head_sum``), then the elements past the last pair of
    vectors. One row takes the
    head rows one by one, in memory order; several rows go in tiles of 2 rows by 2 head rows
    (each head vector loaded once for both rows, 8 sums in flight)."""
    n = logits.shape[0]
    D = x.shape[1]
    VW = _lanes(x)
    D2 = D - D % (2 * VW)
    v = v0
    if n == 1:  # head rows one after another: the order the memory streams them in
        x0, o = x[0], logits[0]
        for v in range(v0, v1):
            h0 = head[v]
            a0 = a1 = _vzero(x0)
            for c in range(0, D2, 2 * VW):
                a0 = _vfma(_vload(x0, c), _vload(h0, c), a0)
                a1 = _vfma(_vload(x0, c + VW), _vload(h0, c + VW), a1)
            o[v] = _head_sum(a0, a1, x0, h0, D2, D)
        return
    while v + 2 <= v1:
        h0, h1 = head[v], head[v + 1]
        for r in range(0, n, 2):
            r1 = min(r + 1, n - 1)  # an odd last row is done twice (the same values)
            x0, x1 = x[r], x[r1]
            a0 = a1 = b0 = b1 = c0 = c1 = d0 = d1 = _vzero(x0)
            for c in range(0, D2, 2 * VW):
                wa, wb = _vload(h0, c), _vload(h0, c + VW)
                ua, ub = _vload(h1, c), _vload(h1, c + VW)
                xa, xb = _vload(x0, c), _vload(x0, c + VW)
                a0, a1 = _vfma(xa, wa, a0), _vfma(xb, wb, a1)
                b0, b1 = _vfma(xa, ua, b0), _vfma(xb, ub, b1)
                xa, xb = _vload(x1, c), _vload(x1, c + VW)
                c0, c1 = _vfma(xa, wa, c0), _vfma(xb, wb, c1)
                d0, d1 = _vfma(xa, ua, d0), _vfma(xb, ub, d1)
            logits[r, v] = _head_sum(a0, a1, x0, h0, D2, D)
            logits[r, v + 1] = _head_sum(b0, b1, x0, h1, D2, D)
            logits[r1, v] = _head_sum(c0, c1, x1, h0, D2, D)
            logits[r1, v + 1] = _head_sum(d0, d1, x1, h1, D2, D)
        v += 2
    for u in range(v, v1):  # the head rows left over
        h0 = head[u]
        for r in range(n):
            x0 = x[r]
            a0 = a1 = _vzero(x0)
            for c in range(0, D2, 2 * VW):
                a0 = _vfma(_vload(x0, c), _vload(h0, c), a0)
                a1 = _vfma(_vload(x0, c + VW), _vload(h0, c + VW), a1)
            logits[r, u] = _head_sum(a0, a1, x0, h0, D2, D)
