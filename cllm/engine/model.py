"""GPT-2 in NumPy and numba: forward and backward written by hand, layer by layer (llm.c style).

Parameters and gradients live in one flat buffer each; ``p[name]`` / ``g[name]`` are views in
the order of ``config.param_shapes``. Matrices are stored ``[in, out]`` (GPT-2's Conv1D), so every
product is ``x @ W`` with no transposes. Activations are allocated once per (B, T) and reused.
"""

from __future__ import annotations

import math
import os

import numpy as np

from cllm.engine import blas
from cllm.engine import kernels as K
from cllm.engine.config import GPTConfig, param_shapes
from cllm.engine.quant import DecodeWeights
from cllm.engine.threads import (
    Team,
    blas_one_thread,
    chunks,
    default_threads,
    run_parallel,
    run_team,
)
from cllm.errors import ValidationError

STEP_TILE = 4  # rows in one register tile of kernels._linear_panels
# The fewest rows a thread of GPT.step takes when a step is shared out by rows (small int8
# models; "rows"): a second thread reads all the weights again, and on the 2-core machine 8 float
# streams on one thread beat 4 + 4 on two with the kernels before the panels (2,021 against
# 1,812 tokens/s, 2,024 against 1,668 per CPU-second; docs/benchmarks.md).
STEP_ROWS = 8
# GPT.step ("auto") shares a step out by output columns (every row on every thread, each reading
# its share of the weights) for 2 or more rows of float weights, which then read their panels
# (a share of the columns is whole panels), and for int8 weights of at least this many bytes:
# stored a row per output, a share is a contiguous block. Measured on 2 cores (AVX2), one
# stream, tokens/s rows / columns: GPT-2 small int8 67-89 / 141, float 47-51 / 32-36 (float
# matrices are stored [in, out]: a share is half of every row, which streams worse); D 512 L 8
# int8 391-419 / 467-628; D 256 L 6 int8 (6 MB) 2,298 / 2,213-2,520, where waking the second
# thread costs what it saves. Float D 256 L 6 from panels, steps of n rows, tokens/s rows /
# columns: n 2 1,711 / 2,067, n 4 2,489 / 3,863, n 8 3,120 / 4,848 (docs/benchmarks.md).
SPLIT_MIN_BYTES = 16 * 2**20
# A prompt of up to this many tokens (one stream, float weights) runs through the decoding
# kernels, a row a token, shared out by columns on every thread, instead of NumPy's products on
# one thread: 16 tokens of D 256 L 6, 4.3 -> 1.6 ms; 64 tokens, 11.0 -> 6.4 ms (2 cores, AVX2).
PROMPT_ROWS = 64


def _views(flat: np.ndarray, cfg: GPTConfig) -> dict[str, np.ndarray]:
    views, off = {}, 0
    for name, shape in param_shapes(cfg):
        n = math.prod(shape)
        views[name] = flat[off : off + n].reshape(shape)
        off += n
    return views


def _block_views(views: dict[str, np.ndarray], l: int) -> dict[str, np.ndarray]:
    """Block l's tensors by their short names ("ln_1.weight", "attn.c_attn.bias", ...)."""
    h = f"h.{l}."
    return {name[len(h) :]: v for name, v in views.items() if name.startswith(h)}


# ----------------------------------------------------------------------------------------------
# layer pairs whose work is mostly BLAS: the numba kernels do the rest


def matmul_forward(out, inp, w, b):
    """out[N,O] = inp[N,I] @ w[I,O] + b[O]."""
    np.matmul(inp, w, out=out)
    out += b


def matmul_backward(dinp, dw, db, dout, inp, w, ones):
    """dinp[N,I] = dout @ w.T (overwritten); dw[I,O] = inp.T @ dout; db[O] = sum of dout rows.

    ``ones[N]``: the bias sum as a BLAS matrix-vector product, far faster than np.sum(axis=0).
    """
    np.matmul(dout, w.T, out=dinp)
    np.matmul(inp.T, dout, out=dw)
    np.matmul(ones, dout, out=db)


def heads(a: np.ndarray, B: int, T: int, H: int, hs: int, i: int) -> np.ndarray:
    """Part i (q, k or v) of a[B*T, n*D] as heads [B, H, T, hs]: a view, no copy."""
    D = H * hs
    return a[:, i * D : (i + 1) * D].reshape(B, T, H, hs).transpose(0, 2, 1, 3)


def attention_forward(y, att, qkv, B, T, H, pos_offset=0, kv=None):
    """Causal self-attention. qkv[B*T, 3D] -> y[B*T, D]; att[B,H,T,Tk] keeps the probabilities.

    With ``kv`` = (k_cache, v_cache) [B,H,C,hs] the new keys and values are written at
    ``pos_offset`` and the queries attend to the whole prefix (decoding).
    """
    D = qkv.shape[1] // 3
    hs = D // H
    q, k, v = (heads(qkv, B, T, H, hs, i) for i in range(3))
    if kv is not None:
        kc, vc = kv
        end = pos_offset + T
        kc[:, :, pos_offset:end] = k
        vc[:, :, pos_offset:end] = v
        k, v = kc[:, :, :end], vc[:, :, :end]
    np.matmul(q, k.transpose(0, 1, 3, 2), out=att)
    lse = np.empty((B * H, T), att.dtype)
    K.attention_softmax_forward(
        att.reshape(B * H, T, att.shape[3]), lse, 1.0 / math.sqrt(hs), pos_offset
    )
    np.matmul(att, v, out=heads(y, B, T, H, hs, 0))


def attention_backward(dqkv, datt, dy, att, qkv, B, T, H):
    """dqkv[B*T,3D] (written) from dy[B*T,D]; datt[B,H,T,T] is scratch."""
    hs = qkv.shape[1] // 3 // H
    q, k, v = (heads(qkv, B, T, H, hs, i) for i in range(3))
    dq, dk, dv = (heads(dqkv, B, T, H, hs, i) for i in range(3))
    dyh = heads(dy, B, T, H, hs, 0)
    np.matmul(dyh, v.transpose(0, 1, 3, 2), out=datt)
    np.matmul(att.transpose(0, 1, 3, 2), dyh, out=dv)
    K.attention_softmax_backward(
        datt.reshape(B * H, T, T), att.reshape(B * H, T, T), 1.0 / math.sqrt(hs)
    )
    np.matmul(datt, k, out=dq)
    np.matmul(datt.transpose(0, 1, 3, 2), q, out=dk)


# Tiled attention: query tiles of TILE rows against the keys up to each tile's end, so nothing
# past the diagonal tile is computed and nothing of size T x T is kept. Two ways to run it:
# - fused (where NumPy's BLAS is an OpenBLAS whose product routine the kernels can call,
#   blas.gemm): kernels.attention_flash_*, blocks of FLASH_TILE x FLASH_TILE scores that stay in
#   the core's cache; nothing but each row's log-sum-exp is kept for the backward, which makes
#   every block's probabilities again. T 2048, one thread, AVX2, one layer's forward / backward:
#   19.6 / 44 ms (NumPy products, probabilities made again) and 20.1 / 36 (kept) -> 17.6-18.0 /
#   35.7-38.0 ms fused, with no probabilities kept; with keys and values transposed for the
#   products against them (kernels._head_columns), forward + backward 50.5 -> 46.0 ms (T 1024:
#   13.0 -> 11.6). The elementwise work (online softmax; probabilities made again and their
#   gradients) takes 4.9 / 6.3 us of a 128 x 128 block, whose products take 19 / 47 us.
# - NumPy's products otherwise (np.matmul on a tile's scores against all its keys, the softmax
#   parts in numba). The backward needs each tile's probabilities again: a layer whose tiles fit
#   in the memory budget below keeps them from the forward (a causal half, about half of what
#   the dense path keeps); the others make them again from the row statistics (lse) the
#   forward kept, at the cost of one more product and an exp a score.
# Dense wins at small T, where the whole T x T fits in cache.
TILE = 128
FLASH_TILE = 128  # query rows and keys of one fused block (64 KiB of float32 scores)
# rows of a group on the diagonal block, each taking only the keys it sees: attention forward +
# backward at T 1024 / 2048 (one sequence, one thread), groups of 64: 13.66 / 53.77 ms, 32: 13.55
# / 53.05, 16: 13.69 / 53.54. Blocks of 64, 128, 192, 256: 15.15, 13.78, 14.43, 14.45 at T 1024.
FLASH_DIAG = 32
# Below it the tiled path is no faster: attention forward + backward, one thread, AVX2, 2,048
# tokens (B x T), dense / tiled: 12.1 / 12.6 ms at T 128, 23.6 / 18.4 at 256, 43.2 / 27.6 at 512.
TILED_FROM_T = 256
# The fused path from here: whole steps, one thread, dense / fused: 87.9 / 87.6 ms at T 64 (V 2048,
# D 128, L 4, B 16), 189.9 / 184.5 at T 128 (B 16), 222.9 / 194.3 at T 256 (B 8); on two threads
# 45.1 / 45.4 at T 64, 96.8 / 94.8 at T 128 (AVX2). From T 128 it is no slower and keeps no T x T.
FUSED_FROM_T = 128
# What the kept probabilities of a training step may take, all layers and threads together; at
# T 1024 (B 2, 4 layers, 4 heads) they take 75 MiB and all are kept, at T 2048 two layers of four.
# The fused path keeps none.
KEEP_PROBS_MB = 160


def use_tiled(T: int) -> bool:
    return T >= (FUSED_FROM_T if fused_attention() else TILED_FROM_T)


def tiled_scratch(H: int, T: int, hs: int, dtype, fused: bool | None = None) -> np.ndarray:
    """Scratch for the tiled attention: the fused kernels' (_fused_scratch), or for NumPy's
    products one tile's scores and their gradients, a tile's dk or dv, and a sequence's dk and
    dv as they build up (contiguous: a += on the strided heads of dqkv took 2 ns a float, 7 of a
    layer's 56 ms at T 2048; on these 0.4 ns). ``fused``: None, as this machine runs it."""
    fused = fused_attention(dtype) if fused is None else fused
    return np.empty(tiled_scratch_size(H, T, hs, fused), dtype)


def tiled_scratch_size(H: int, T: int, hs: int, fused: bool) -> int:
    """``fused``: for the fused kernels, else for NumPy's products (which kept probabilities
    need)."""
    if fused:  # _fused_scratch's parts
        t = min(FLASH_TILE, T)
        return 2 * t * t + t * hs + 2 * t + T + hs * T + hs * t
    return 2 * min(TILE, T) * T * H + 3 * H * T * hs


def _fused_scratch(scratch: np.ndarray, T: int, hs: int) -> tuple:
    """The fused kernels' scratch: a block's scores s and their gradients dp (t x t), a tile's
    output o (t x hs), its rows' running max and sum ml (2 x t), the rows' delta (T), keys
    transposed kt (a head's in the forward, hs x T; a block's in the backward) and a block's
    values transposed vt (hs x t)."""
    t = min(FLASH_TILE, T)
    sizes = (t * t, t * t, t * hs, 2 * t, T, hs * T, hs * t)
    if scratch.size < sum(sizes):  # the kernels do not check their bounds
        raise ValueError("the scratch is too small for the fused attention")
    parts = np.split(scratch[: sum(sizes)], np.cumsum(sizes)[:-1])
    parts[3] = parts[3].reshape(2, t)
    return tuple(parts)


def fused_attention(dtype=np.float32) -> bool:
    """Whether the tiled attention runs fused (kernels calling NumPy's BLAS routine)."""
    return _fused_gemm(dtype) is not None


def fused_scratch(keep: int, dtype=np.float32) -> bool:
    """Whether a tiled step's scratch is the fused kernels' (no layer keeps probabilities)."""
    return fused_attention(dtype) and not keep


def _fused_gemm(dtype) -> blas.Gemm | None:
    """The BLAS routine the fused kernels call, or None: none found, or the environment
    variable CLLM_FUSED_ATTENTION=0 turns the fused path off (NumPy's products instead)."""
    if os.environ.get("CLLM_FUSED_ATTENTION", "1").strip() == "0":
        return None
    return blas.gemm(dtype)


def tile_layout(T: int, H: int) -> tuple[list[tuple[int, int, int]], int]:
    """The query tiles (i0, i1, offset) of one sequence's kept probabilities, tile by tile
    (H x (i1 - i0) x i1 each: keys up to the tile's end), and the size of the whole."""
    tiles, off = [], 0
    for i0 in range(0, T, TILE):
        i1 = min(T, i0 + TILE)
        tiles.append((i0, i1, off))
        off += H * (i1 - i0) * i1
    return tiles, off


def kept_layers(cfg: GPTConfig, B: int, T: int, itemsize: int) -> int:
    """How many layers keep their tiles' probabilities for the backward within KEEP_PROBS_MB."""
    if fused_attention(np.float32 if itemsize == 4 else np.float64):
        return 0
    per_layer = B * tile_layout(T, cfg.n_head)[1] * itemsize
    return min(cfg.n_layer, int(KEEP_PROBS_MB * 2**20 // max(1, per_layer)))


def attention_tiled_forward(y, lse, qkv, B, T, H, scratch, probs=None):
    """qkv[B*T, 3D] -> y[B*T, D] as attention_forward; lse[B, H, T] keeps each row's
    log-sum-exp of its scaled scores for the backward, and ``probs`` (B x tile_layout's size,
    or None) each tile's probabilities."""
    hs = qkv.shape[1] // 3 // H
    gemm = _fused_gemm(qkv.dtype) if probs is None else None
    if gemm is not None:
        s, _, o, ml, _, kt, _ = _fused_scratch(scratch, T, hs)
        _check_fused(y, lse, qkv)
        K.attention_flash_forward(*gemm, y, lse, qkv, B, T, H, 1.0 / math.sqrt(hs), FLASH_TILE,
                                  FLASH_DIAG, s, o, ml, kt)  # fmt: skip
        return
    q, k, v = (heads(qkv, B, T, H, hs, i) for i in range(3))
    yh = heads(y, B, T, H, hs, 0)
    tiles, size = tile_layout(T, H)
    for b in range(B):
        for i0, i1, off in tiles:
            m = H * (i1 - i0) * i1
            att = (scratch[:m] if probs is None else probs[b * size + off :][:m]).reshape(
                H, i1 - i0, i1
            )
            np.matmul(q[b, :, i0:i1], k[b, :, :i1].transpose(0, 2, 1), out=att)
            K.attention_softmax_forward(att, lse[b, :, i0:i1], 1.0 / math.sqrt(hs), i0)
            np.matmul(att, v[b, :, :i1], out=yh[b, :, i0:i1])


def attention_tiled_backward(dqkv, dy, y, lse, qkv, B, T, H, scratch, probs=None):
    """dqkv[B*T, 3D] (written) from dy[B*T, D], given the forward's output y, lse, and its
    kept probabilities (or None: they are made again from lse).

    Making them again, a tile runs a head at a time: its scores and their gradients (2 x TILE x T
    floats, 2 MiB at T 2048) stay in the cache through the five products and the softmax's pass,
    where four heads' together (8 MiB) did not. A layer's backward at T 2048, one thread, medians
    of 12 (AVX2): 69.5 -> 64.5 and 73.1 -> 63.1 ms. With kept probabilities the heads go
    together: a head at a time was faster alone (48.2 -> 44.9 ms) but not in a training step
    (T 1024, all layers kept, steps of 423 / 435 ms, 365 / 381)."""
    hs = qkv.shape[1] // 3 // H
    gemm = _fused_gemm(qkv.dtype) if probs is None else None
    if gemm is not None:
        s, dp, _, _, delta, kt, vt = _fused_scratch(scratch, T, hs)
        _check_fused(dqkv, dy, y, lse, qkv)
        K.attention_flash_backward(*gemm, dqkv, dy, y, lse, qkv, B, T, H, 1.0 / math.sqrt(hs),
                                   FLASH_TILE, FLASH_DIAG, s, dp, delta, kt, vt)  # fmt: skip
        return
    q, k, v = (heads(qkv, B, T, H, hs, i) for i in range(3))
    dq, dk, dv = (heads(dqkv, B, T, H, hs, i) for i in range(3))
    dyh, yh = heads(dy, B, T, H, hs, 0), heads(y, B, T, H, hs, 0)
    delta = np.einsum("bhtd,bhtd->bht", dyh, yh)  # sum_j p_ij dp_ij, per row
    n = min(TILE, T) * T * H
    scale = 1.0 / math.sqrt(hs)
    tiles, size = tile_layout(T, H)
    acc_k, acc_v = scratch[2 * n + H * T * hs :].reshape(2, H, T, hs)
    G = 1 if probs is None else H  # heads a pass takes together
    for b in range(B):
        for i0, i1, off in tiles:
            m = G * (i1 - i0) * i1
            datt = scratch[n : n + m].reshape(G, i1 - i0, i1)
            part = scratch[2 * n : 2 * n + G * i1 * hs].reshape(G, i1, hs)
            for h in range(0, H, G):
                g = slice(h, h + G)
                qt, dyt, kh = q[b, g, i0:i1], dyh[b, g, i0:i1], k[b, g, :i1]
                np.matmul(dyt, v[b, g, :i1].transpose(0, 2, 1), out=datt)
                if probs is None:  # the scores again, made probabilities by the kernel
                    att = scratch[:m].reshape(G, i1 - i0, i1)
                    np.matmul(qt, kh.transpose(0, 2, 1), out=att)
                else:
                    att = probs[b * size + off :][:m].reshape(G, i1 - i0, i1)
                K.attention_softmax_grad(
                    att, datt, lse[b, g, i0:i1], delta[b, g, i0:i1], scale, i0, probs is None
                )
                # keys i0:i1 get their first share from this tile (earlier ones end before them)
                np.matmul(att.transpose(0, 2, 1), dyt, out=part)  # att still cached
                acc_v[g, :i0] += part[:, :i0]
                acc_v[g, i0:i1] = part[:, i0:]
                np.matmul(datt, kh, out=dq[b, g, i0:i1])
                np.matmul(datt.transpose(0, 2, 1), qt, out=part)
                acc_k[g, :i0] += part[:, :i0]
                acc_k[g, i0:i1] = part[:, i0:]
        dk[b], dv[b] = acc_k, acc_v


def _check_fused(*arrays) -> None:
    """The fused kernels address their arrays by flat offsets: they must be contiguous."""
    if not all(a.flags.c_contiguous for a in arrays) or FLASH_TILE % FLASH_DIAG:
        raise ValueError("the fused attention needs contiguous arrays and FLASH_DIAG | FLASH_TILE")


def block_forward(w, a, x_in, x_mid, x_out, attend) -> None:
    """One transformer block over B*T rows: x_mid = x_in + attn(ln_1(x_in)), x_out = x_mid +
    mlp(ln_2(x_mid)). ``w``: the block's tensors by short name; ``a``: its buffers (kept for
    the backward in training, scratch in decoding); ``attend(y, qkv)``: the attention
    (dense, tiled, or against a key-value cache). x_out may be x_in, x_mid may not."""
    K.layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x_in, w["ln_1.weight"], w["ln_1.bias"])
    matmul_forward(a.qkv, a.ln1, w["attn.c_attn.weight"], w["attn.c_attn.bias"])
    attend(a.atty, a.qkv)
    matmul_forward(x_mid, a.atty, w["attn.c_proj.weight"], w["attn.c_proj.bias"])
    x_mid += x_in
    K.layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, x_mid, w["ln_2.weight"], w["ln_2.bias"])
    np.matmul(a.ln2, w["mlp.c_fc.weight"], out=a.fch)
    K.bias_gelu_forward(a.fch_gelu, a.fch, w["mlp.c_fc.bias"])
    matmul_forward(x_out, a.fch_gelu, w["mlp.c_proj.weight"], w["mlp.c_proj.bias"])
    x_out += x_mid


class LayerBuffers:
    """One block's buffers for block_forward: views of Activations' layer l, or scratch."""

    NAMES = (
        "ln1", "ln1_mean", "ln1_rstd", "qkv", "atty", "ln2", "ln2_mean", "ln2_rstd", "fch",
        "fch_gelu",
    )  # fmt: skip

    def __init__(self, **bufs: np.ndarray):
        for name in self.NAMES:
            setattr(self, name, bufs[name])

    @classmethod
    def scratch(cls, cfg: GPTConfig, N: int, dtype) -> LayerBuffers:
        D, F = cfg.n_embd, cfg.n_inner
        shapes = dict(ln1=(N, D), qkv=(N, 3 * D), atty=(N, D), ln2=(N, D), fch=(N, F))
        shapes.update(fch_gelu=(N, F), ln1_mean=(N,), ln1_rstd=(N,), ln2_mean=(N,))
        shapes.update(ln2_rstd=(N,))
        return cls(**{k: np.empty(v, dtype) for k, v in shapes.items()})


class Activations:
    """Every buffer one training step needs for a given (B, T), allocated once."""

    def __init__(self, cfg: GPTConfig, B: int, T: int, dtype, tiled: bool = False, keep: int = 0):
        """``keep``: how many layers (the first) keep their tiles' probabilities (tiled only)."""
        L, D, F, H, V, N = cfg.n_layer, cfg.n_embd, cfg.n_inner, cfg.n_head, cfg.vocab_size, B * T
        e = lambda *s: np.empty(s, dtype)  # noqa: E731
        self.B, self.T, self.tiled = B, T, tiled
        self.resid = e(L + 1, N, D)  # input of block l; resid[L] feeds ln_f
        self.resid_mid = e(L, N, D)  # after the attention half of block l
        self.ln1, self.ln1_mean, self.ln1_rstd = e(L, N, D), e(L, N), e(L, N)
        self.ln2, self.ln2_mean, self.ln2_rstd = e(L, N, D), e(L, N), e(L, N)
        self.qkv = e(L, N, 3 * D)
        if tiled:  # row statistics instead of probabilities, and one tile's scratch
            self.lse = e(L, B, H, T)
            self.scratch = tiled_scratch(H, T, cfg.head_size, dtype, fused_scratch(keep, dtype))
            size = B * tile_layout(T, H)[1]
            self.probs = [e(size) if l < keep else None for l in range(L)]
        else:
            self.att, self.datt = e(L, B, H, T, T), e(B, H, T, T)
        self.atty = e(L, N, D)
        self.fch = e(L, N, F)  # pre-GELU
        self.fch_gelu = e(L, N, F)
        self.lnf, self.lnf_mean, self.lnf_rstd = e(N, D), e(N), e(N)
        self.logits = e(N, V)  # becomes dlogits after the fused cross-entropy
        self.losses = e(N)
        # backward scratch
        self.dresid, self.dx, self.datty = e(N, D), e(N, D), e(N, D)
        self.dqkv, self.dfch = e(N, 3 * D), e(N, F)
        self.idx: np.ndarray | None = None
        self.ones = np.ones(N, dtype)

    def layer(self, l: int) -> LayerBuffers:
        return LayerBuffers(**{name: getattr(self, name)[l] for name in LayerBuffers.NAMES})


class KVCache:
    """Keys and values of every layer for up to block_size positions of ``batch`` slots, one
    per stream: k, v [L, batch, H, C, hs]. ``pos`` is the next position when all slots move
    together (``GPT.decode``); a batch decoder keeps each slot's own length instead."""

    def __init__(self, cfg: GPTConfig, batch: int, dtype):
        shape = (cfg.n_layer, batch, cfg.n_head, cfg.block_size, cfg.head_size)
        self.k = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)
        self.batch = batch
        self.pos = 0
        self.scratch: dict[tuple, tuple] = {}  # decode_step's buffers for each thread's rows

    def split_scratch(self, cfg: GPTConfig, n: int, parts: int, dtype) -> tuple:
        """decode_part's buffers for n rows on ``parts`` threads: the barrier, the shared
        (qkv, y, o, h) and each thread's own (x, ln, att)."""
        key = ("columns", n, parts)
        if key not in self.scratch:
            D, F, C = cfg.n_embd, cfg.n_inner, cfg.block_size
            e = lambda *s: np.zeros(s, dtype)  # noqa: E731
            bar = np.zeros(K.BARRIER_SIZE, np.int64)
            shared = (e(n, 3 * D), e(n, D), e(n, D), e(n, F))
            own = [(e(n, D), e(n, D), e(C)) for _ in range(parts)]
            self.scratch[key] = (bar, shared, own)
        return self.scratch[key]

    def step_scratch(self, cfg: GPTConfig, rows: slice, dtype) -> tuple:
        key = (rows.start, rows.stop)
        if key not in self.scratch:
            n, D, F, C = rows.stop - rows.start, cfg.n_embd, cfg.n_inner, cfg.block_size
            e = lambda *s: np.empty(s, dtype)  # noqa: E731
            self.scratch[key] = (e(n, D), e(n, D), e(n, 3 * D), e(n, D), e(n, F), e(C))
        return self.scratch[key]


class Shard:
    """One worker's slice of the batch: rows b0:b1, its activations and its own gradients."""

    def __init__(self, gpt: GPT, b0: int, b1: int, T: int, grads: np.ndarray, keep: int = 0):
        self.b0, self.b1 = b0, b1
        self.acts = Activations(gpt.config, b1 - b0, T, gpt.dtype, gpt.tiled(T), keep)
        self.grads = grads
        self.g = _views(grads, gpt.config)
        self.gl = [_block_views(self.g, l) for l in range(gpt.config.n_layer)]


class GPT:
    """GPT-2: pre-norm blocks, tied embeddings, tanh GELU. ``dtype`` float64 exists for the
    gradient checks.

    ``threads`` (default: ``default_threads()`` at each forward): a batch is cut into that many
    slices that run forward and backward at the same time, one thread each (numba kernels and
    NumPy release the GIL); their gradients are summed.
    """

    def __init__(
        self,
        config: GPTConfig,
        seed: int = 0,
        dtype=np.float32,
        init: bool = True,
        threads: int | None = None,
        attention: str = "auto",
    ):
        self.config = config
        self.dtype = np.dtype(dtype)
        self.threads = threads
        if attention not in ("auto", "dense", "tiled"):
            raise ValidationError(f"attention must be auto, dense or tiled, got {attention!r}")
        self.attention = attention
        self.n_params = sum(math.prod(s) for _, s in param_shapes(config))
        self.params = np.zeros(self.n_params, self.dtype)
        self.grads = np.zeros(self.n_params, self.dtype)
        self.p = _views(self.params, config)
        self.g = _views(self.grads, config)
        self.pl = [_block_views(self.p, l) for l in range(config.n_layer)]
        self._decode_weights: DecodeWeights | None = None
        self.shards: list[Shard] = []  # those of the last forward
        self._plans: dict[tuple, list[Shard]] = {}
        self._shard_grads: list[np.ndarray] = []
        self._have_dlogits = False
        if init:
            rng = np.random.default_rng(seed)
            for name in ("wte", "wpe"):
                self.p[name][:] = rng.normal(0.0, 0.02, self.p[name].shape)
            self.p["ln_f.weight"][:] = 1.0
            self._init_blocks(rng, range(config.n_layer))

    def _init_blocks(self, rng: np.random.Generator, layers: range) -> None:
        std_proj = 0.02 / math.sqrt(2 * self.config.n_layer)  # residual projections, as GPT-2
        for i in layers:
            h = f"h.{i}."
            for n in ("ln_1", "ln_2"):
                self.p[h + n + ".weight"][:] = 1.0
            for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                std = std_proj if n.endswith("c_proj") else 0.02
                w = self.p[h + n + ".weight"]
                w[:] = rng.normal(0.0, std, w.shape)

    def tiled(self, T: int) -> bool:
        """Whether training at length T runs the tiled attention (``attention``: auto picks by
        T, dense and tiled force one)."""
        return self.attention == "tiled" or (self.attention == "auto" and use_tiled(T))

    def _plan(self, B: int, T: int) -> list[Shard]:
        """Slices of the batch with their buffers; the last two shapes are kept (training and
        validation batches may differ) so that alternating between them allocates nothing."""
        S = max(1, min(self.threads or default_threads(), B))
        if B * T < 256:  # too little work to be worth a thread handoff
            S = 1
        key = (B, T, S, self.tiled(T))
        if key not in self._plans:
            while len(self._shard_grads) < S:  # slice 0 writes the model's own gradients
                self._shard_grads.append(
                    self.grads if not self._shard_grads else np.zeros(self.n_params, self.dtype)
                )
            cuts = [B * i // S for i in range(S + 1)]
            keep = kept_layers(self.config, B, T, self.dtype.itemsize) if self.tiled(T) else 0
            self._plans[key] = [
                Shard(self, cuts[i], cuts[i + 1], T, self._shard_grads[i], keep) for i in range(S)
            ]
            if len(self._plans) > 2:
                del self._plans[next(iter(self._plans))]
        self.shards = self._plans[key]
        return self.shards

    # ------------------------------------------------------------------------------------------
    def forward(self, idx: np.ndarray, targets: np.ndarray | None = None):
        """idx int [B, T] -> mean cross-entropy (float) with targets, else logits [B, T, V]."""
        idx = np.ascontiguousarray(idx, dtype=np.int32)
        if idx.ndim != 2:
            raise ValidationError(f"token ids must be a [batch, time] array, got shape {idx.shape}")
        B, T = idx.shape
        V = self.config.vocab_size
        if not 1 <= T <= self.config.block_size:
            raise ValidationError(f"sequence length {T} is outside 1..{self.config.block_size}")
        if idx.size and (idx.min() < 0 or idx.max() >= V):
            raise ValidationError(f"token ids must lie in 0..{V - 1}")
        if targets is not None:
            targets = np.ascontiguousarray(targets, dtype=np.int32).reshape(B, T)
            if targets.min() < 0 or targets.max() >= V:
                raise ValidationError(f"target ids must lie in 0..{V - 1}")
        shards = self._plan(B, T)
        self._have_dlogits = False
        blas_one_thread()

        def run(sh: Shard) -> None:
            sl = slice(sh.b0, sh.b1)
            self._forward(sh.acts, idx[sl], None if targets is None else targets[sl], B * T)

        run_parallel(run, shards)
        if targets is None:
            return np.concatenate([sh.acts.logits.reshape(sh.b1 - sh.b0, T, V) for sh in shards])
        self._have_dlogits = True
        return float(sum(sh.acts.losses.sum(dtype=np.float64) for sh in shards) / (B * T))

    def _forward(self, a: Activations, idx, targets, n_total: int) -> None:
        """One slice's forward; with targets, its logits become dlogits of the mean over n_total."""
        cfg, p = self.config, self.p
        B, T, H = a.B, a.T, cfg.n_head
        x0 = a.resid[0].reshape(B, T, -1)
        np.take(p["wte"], idx, axis=0, out=x0)
        x0 += p["wpe"][:T]
        for l in range(cfg.n_layer):
            if a.tiled:
                lse, probs = a.lse[l], a.probs[l]
                attend = lambda y, qkv: attention_tiled_forward(  # noqa: E731
                    y, lse, qkv, B, T, H, a.scratch, probs  # noqa: B023
                )  # fmt: skip
            else:
                att = a.att[l]
                attend = lambda y, qkv: attention_forward(y, att, qkv, B, T, H)  # noqa: E731,B023
            block_forward(
                self.pl[l], a.layer(l), a.resid[l], a.resid_mid[l], a.resid[l + 1], attend
            )
        K.layernorm_forward(
            a.lnf, a.lnf_mean, a.lnf_rstd, a.resid[cfg.n_layer], p["ln_f.weight"], p["ln_f.bias"]
        )
        np.matmul(a.lnf, p["wte"].T, out=a.logits)  # the head is tied to the token embedding
        a.idx = idx
        if targets is not None:
            K.crossentropy_forward_backward(a.logits, targets.reshape(-1), a.losses, 1.0 / n_total)

    @property
    def losses(self) -> np.ndarray:
        """Per-position losses [B, T] of the last forward with targets."""
        return np.concatenate([sh.acts.losses.reshape(sh.acts.B, sh.acts.T) for sh in self.shards])

    def backward(self) -> None:
        """Fill ``grads`` (overwriting them) with d(mean loss)/d(params) of the last forward."""
        if not self._have_dlogits:
            raise RuntimeError("backward() needs a forward(idx, targets) first")
        self._have_dlogits = False  # the dlogits are consumed in place
        shards = self.shards
        run_parallel(lambda sh: self._backward(sh.acts, sh.g, sh.gl), shards)
        if len(shards) > 1:  # sum the slices' gradients, each thread a range of the buffer

            def reduce(r: slice) -> None:
                for sh in shards[1:]:
                    np.add(self.grads[r], sh.grads[r], out=self.grads[r])

            run_parallel(reduce, chunks(self.n_params, len(shards)))

    def _backward(self, a: Activations, g: dict, gl: list[dict]) -> None:
        p, cfg = self.p, self.config
        B, T, H, L = a.B, a.T, cfg.n_head, cfg.n_layer
        # head (tied): d(lnf) = dlogits @ wte; d(wte) starts as dlogits.T @ lnf
        np.matmul(a.logits, p["wte"], out=a.dx)
        np.matmul(a.logits.T, a.lnf, out=g["wte"])
        a.dresid[:] = 0.0
        K.layernorm_backward(
            a.dresid,
            g["ln_f.weight"],
            g["ln_f.bias"],
            a.dx,
            a.resid[L],
            a.lnf_mean,
            a.lnf_rstd,
            p["ln_f.weight"],
        )
        for l in reversed(range(L)):
            w, gw = self.pl[l], gl[l]
            # MLP half: dresid is the gradient wrt resid[l + 1]
            matmul_backward(
                a.dfch,
                gw["mlp.c_proj.weight"],
                gw["mlp.c_proj.bias"],
                a.dresid,
                a.fch_gelu[l],
                w["mlp.c_proj.weight"],
                a.ones,
            )
            K.gelu_backward(a.dfch, a.fch[l])
            matmul_backward(
                a.dx,
                gw["mlp.c_fc.weight"],
                gw["mlp.c_fc.bias"],
                a.dfch,
                a.ln2[l],
                w["mlp.c_fc.weight"],
                a.ones,
            )
            K.layernorm_backward(
                a.dresid,
                gw["ln_2.weight"],
                gw["ln_2.bias"],
                a.dx,
                a.resid_mid[l],
                a.ln2_mean[l],
                a.ln2_rstd[l],
                w["ln_2.weight"],
            )
            # attention half: dresid is now the gradient wrt resid_mid[l]
            matmul_backward(
                a.datty,
                gw["attn.c_proj.weight"],
                gw["attn.c_proj.bias"],
                a.dresid,
                a.atty[l],
                w["attn.c_proj.weight"],
                a.ones,
            )
            if a.tiled:
                attention_tiled_backward(
                    a.dqkv, a.datty, a.atty[l], a.lse[l], a.qkv[l], B, T, H, a.scratch, a.probs[l]
                )
            else:
                attention_backward(a.dqkv, a.datt, a.datty, a.att[l], a.qkv[l], B, T, H)
            matmul_backward(
                a.dx,
                gw["attn.c_attn.weight"],
                gw["attn.c_attn.bias"],
                a.dqkv,
                a.ln1[l],
                w["attn.c_attn.weight"],
                a.ones,
            )
            K.layernorm_backward(
                a.dresid,
                gw["ln_1.weight"],
                gw["ln_1.bias"],
                a.dx,
                a.resid[l],
                a.ln1_mean[l],
                a.ln1_rstd[l],
                w["ln_1.weight"],
            )
        K.embedding_backward(g["wte"], g["wpe"], a.dresid.reshape(B, T, -1), a.idx)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """ids [T] -> [T, V]; ids [B, T] -> [B, T, V]."""
        ids = np.asarray(ids)
        if ids.ndim == 1:
            return self.forward(ids[None])[0]
        return self.forward(ids)

    # ------------------------------------------------------------------------------------------
    def new_cache(self, batch: int = 1) -> KVCache:
        return KVCache(self.config, batch, self.dtype)

    def set_quant(self, quant: str) -> None:
        """Decode one token at a time with the block matrices and head in ``quant`` ("none",
        "int8"; see quant.py): a quantised copy of the parameters as they are now, for
        generation. Training, and prompts of several tokens, use the float parameters."""
        self._decode_weights = DecodeWeights(self.config, self.params, quant)

    @property
    def quant(self) -> str:
        return self.decode_weights().quant

    def decode_weights(self) -> DecodeWeights:
        if self._decode_weights is None:
            self._decode_weights = DecodeWeights(self.config, self.params, "none")
        return self._decode_weights

    # How GPT.step shares a step out among threads: "rows" (each thread all the weights for its
    # rows), "columns" (every row on every thread, each its share of the weights' columns) or
    # "auto" (columns for 2 or more rows of float weights and for int8 weights of
    # SPLIT_MIN_BYTES or more, when there are 2+ threads).
    step_split = "auto"

    def step(self, tokens, cache: KVCache, slots, pos) -> np.ndarray:
        """One new token for each of n streams: tokens[n] at positions pos[n] of cache slots
        slots[n] (streams may be at different lengths). Returns logits [n, V]. With float
        weights, 2 or more rows run in register tiles of 4 over the matrices' panels
        (``kernels._linear_panels``), each thread computing its share of the output columns
        (``step_split``). On one thread, and shared out by rows, each row's logits are bit for
        bit the same whichever rows run beside it; shared out by columns they are the same to
        rounding (``_step_columns``: float weights take the head from its panels there, summed
        in another order), so batching does not change a stream's greedy tokens short of a
        near tie."""
        cfg = self.config
        tokens, slots, pos = (
            np.ascontiguousarray(a, np.int64).reshape(-1) for a in (tokens, slots, pos)
        )
        n = tokens.size
        if not (slots.size == pos.size == n):
            raise ValidationError("tokens, slots and positions must have one entry per stream")
        if n == 0:
            return np.zeros((0, cfg.vocab_size), self.dtype)
        if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:  # the kernel reads rows unchecked
            raise ValidationError(f"token ids must lie in 0..{cfg.vocab_size - 1}")
        if slots.min() < 0 or slots.max() >= cache.batch or len(set(slots.tolist())) < n:
            raise ValidationError(f"slots must be distinct and lie in 0..{cache.batch - 1}")
        if pos.min() < 0 or pos.max() >= cfg.block_size:
            raise ValidationError(f"positions must lie in 0..{cfg.block_size - 1}")
        logits = np.empty((n, cfg.vocab_size), self.dtype)
        self._rows(tokens, cache, slots, pos, logits)
        return logits

    def _rows(self, tokens, cache: KVCache, slots, pos, logits, prompt: bool = False) -> None:
        """``step``'s work, checks done: the logits of the rows into logits [n, V], or of the
        last m rows into logits [m, V]. ``prompt``: the rows are one slot's prompt at
        consecutive positions, each reading the keys of the ones before it, so they are never
        cut by rows among threads."""
        cfg, dw, n = self.config, self.decode_weights(), tokens.size
        threads = self.threads or default_threads()
        split = self.step_split
        if split == "auto" or prompt:
            big = dw.quant == "int8" and dw.wq.nbytes + dw.head.nbytes >= SPLIT_MIN_BYTES
            panels = dw.quant == "none" and n > 1
            split = "columns" if threads > 1 and (big or panels or prompt) else "rows"
        panels = dw.panel_weights() if n > 1 else dw.no_panels  # 2+ rows read the panels
        if split == "columns" and threads > 1:
            self._step_columns(tokens, cache, slots, pos, logits, threads, panels)
            return
        # Each thread reads every weight once for its rows, 4 rows to a register tile: a thread
        # gets whole tiles, and at least STEP_ROWS rows (another thread reads the weights again).
        per = max(-(-n // threads), STEP_ROWS)
        per = -(-per // STEP_TILE) * STEP_TILE if n > 1 else 1
        parts = [slice(i, min(n, i + per)) for i in range(0, n, per)]
        pw, poffs, _ = panels  # the head's rows as they are: a row's logits the same alone

        def run(sl: slice) -> None:
            K.decode_step(
                tokens[sl], slots[sl], pos[sl], dw.wpe, dw.blocks, dw.offs, dw.wq, dw.woffs,
                dw.sq, dw.soffs, pw, poffs, dw.head, dw.head_s, dw.lnf_w, dw.lnf_b, cache.k,
                cache.v, *cache.step_scratch(cfg, sl, self.dtype), logits[sl],
            )  # fmt: skip

        run_parallel(run, parts)

    def _step_columns(
        self, tokens, cache: KVCache, slots, pos, logits, parts: int, panels: tuple
    ) -> None:
        """``step`` with every row on all ``parts`` threads at once, each computing its share of
        every product's output columns (``kernels.decode_part``): each reads only its share of
        the weights, and they meet at barriers. The same logits as one thread to rounding: two or
        more rows of float weights take the head from its panels (``DecodeWeights.panel_weights``;
        0.34 -> about 0.2 ms of an 8-row step of the small preset), each logit summed along the
        model width rather than as a dot product of vector halves. Before that head, this path
        was bit for bit one thread's in thousands of comparisons of a stress loop, but a few
        test runs saw a float32 row differ by one rounding, with no cause found; the tests hold
        it to rounding (tests/cllm/engine/test_batch.py)."""
        cfg, dw, n = self.config, self.decode_weights(), tokens.size
        bar, shared, own = cache.split_scratch(cfg, n, parts, self.dtype)
        bar[:] = 0
        pw, poffs, hp = panels

        def run(part: int, flag: np.ndarray) -> None:
            try:
                K.decode_part_signal(
                    flag, Team.DONE, part, parts, bar, tokens, slots, pos, dw.wpe, dw.blocks,
                    dw.offs, dw.wq, dw.woffs, dw.sq, dw.soffs, pw, poffs, hp, dw.head,
                    dw.head_s, dw.lnf_w, dw.lnf_b, cache.k, cache.v, *own[part], *shared, logits,
                )  # fmt: skip
            except BaseException:
                bar[K.BARRIER_ABORT] = 1  # the partners' barriers stop waiting for this one
                raise

        run_team(run, parts, signals=True)

    def prefill(
        self, ids: np.ndarray, cache: KVCache, slot: int, pos: int = 0, last: bool = False
    ) -> np.ndarray:
        """Run ids [T] into cache slot ``slot`` at positions pos.. (a prompt: one matrix product
        per layer, float weights); returns the logits [T, V], or with ``last`` only the last
        position's [V] (the head's product for one row instead of T)."""
        ids = np.ascontiguousarray(ids, np.int32).reshape(1, -1)
        out = self._prefill(ids, cache, slice(slot, slot + 1), pos, last)
        return out[0, -1] if last else out[0]

    def decode(self, ids: np.ndarray, cache: KVCache, last: bool = False) -> np.ndarray:
        """Run ids [B, t] at positions cache.pos.. with the KV cache; returns logits [B, t, V],
        or with ``last`` [B, 1, V], the last position's only (what sampling needs: the head's
        product for one row, and the logits ``prefill(last=True)`` gives a batched stream)."""
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        if ids.ndim == 1:
            ids = ids[None]
        B, T = ids.shape
        cfg = self.config
        pos = cache.pos
        if B != cache.batch:
            raise ValidationError(f"cache holds batch {cache.batch}, got {B}")
        if pos + T > cfg.block_size:
            raise ValidationError(f"the cache holds {cfg.block_size} positions; {pos + T} asked")
        if T == 0:
            return np.zeros((B, 0, cfg.vocab_size), self.dtype)
        if T == 1:
            out = self.step(ids[:, 0], cache, np.arange(B), np.full(B, pos))
        else:
            out = self._prefill(ids, cache, slice(0, B), pos, last)
        cache.pos = pos + T
        return out.reshape(B, 1 if last else T, -1)

    def _prefill(
        self, ids: np.ndarray, cache: KVCache, slots: slice, pos: int, last: bool = False
    ) -> np.ndarray:
        cfg, p = self.config, self.p
        B, T = ids.shape
        if pos < 0 or pos + T > cfg.block_size:
            raise ValidationError(f"the cache holds {cfg.block_size} positions; {pos + T} asked")
        if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
            raise ValidationError(f"token ids must lie in 0..{cfg.vocab_size - 1}")
        if B == 1 and T <= PROMPT_ROWS and self.decode_weights().quant == "none":
            # a row a token, on every thread (float weights: a quantised model's prompt stays
            # on the float parameters, as its training and its longer prompts are)
            logits = np.empty((1 if last else T, cfg.vocab_size), self.dtype)
            rows = np.arange(pos, pos + T, dtype=np.int64)
            slot = np.full(T, slots.start, np.int64)
            self._rows(ids[0].astype(np.int64), cache, slot, rows, logits, prompt=True)
            return logits[None]
        N, H = B * T, cfg.n_head
        x = (p["wte"][ids] + p["wpe"][pos : pos + T]).reshape(N, -1).astype(self.dtype)
        x_mid = np.empty_like(x)
        bufs = LayerBuffers.scratch(cfg, N, self.dtype)
        att = np.empty((B, H, T, pos + T), self.dtype)
        blas_one_thread()
        for l in range(cfg.n_layer):
            kv = (cache.k[l, slots], cache.v[l, slots])
            attend = lambda y, qkv: attention_forward(y, att, qkv, B, T, H, pos, kv)  # noqa: E731,B023
            block_forward(self.pl[l], bufs, x, x_mid, x, attend)
        ln = bufs.ln1
        K.layernorm_forward(ln, bufs.ln1_mean, bufs.ln1_rstd, x, p["ln_f.weight"], p["ln_f.bias"])
        if last:  # [B, 1, V]: the next token's logits only
            return (ln.reshape(B, T, -1)[:, -1] @ p["wte"].T).reshape(B, 1, -1)
        return (ln @ p["wte"].T).reshape(B, T, -1)

    # ------------------------------------------------------------------------------------------
    def decay_mask(self) -> np.ndarray:
        """1 on 2-D tensors (embeddings and weight matrices), 0 on biases and LayerNorms."""
        return decay_mask(self.config, self.dtype)

    def grow_layers(self, n_layer: int, seed: int = 0) -> None:
        """Grow to n_layer blocks in total; the new blocks compute the identity.

        New blocks get the usual init except their output projections (weights and biases) are
        zero, so they add nothing to the residual stream and the logits do not change.
        """
        old = self.config
        if n_layer < old.n_layer:
            raise ValidationError(
                f"layers can only grow: the model has {old.n_layer}, asked {n_layer}"
            )
        if n_layer == old.n_layer:
            return
        new = old.with_layers(n_layer)
        params = GPT.remap_flat(old, new, self.params)
        self.config = new
        self.n_params = params.size
        self.params = params
        self.grads = np.zeros_like(params)
        self.p, self.g = _views(self.params, new), _views(self.grads, new)
        self.pl = [_block_views(self.p, l) for l in range(n_layer)]
        self._decode_weights = None
        self.shards, self._plans, self._shard_grads = [], {}, []
        self._have_dlogits = False
        self._init_blocks(np.random.default_rng(seed), range(old.n_layer, n_layer))
        for i in range(old.n_layer, n_layer):
            for n in ("attn.c_proj", "mlp.c_proj"):
                self.p[f"h.{i}.{n}.weight"][:] = 0.0
                self.p[f"h.{i}.{n}.bias"][:] = 0.0

    @staticmethod
    def remap_flat(
        old_config: GPTConfig, new_config: GPTConfig, old_flat: np.ndarray
    ) -> np.ndarray:
        """Move a flat buffer (params, grads, optimizer moments) into new_config's layout.

        Tensors with the same name and shape are copied; the rest start at zero.
        """
        new_flat = np.zeros(sum(math.prod(s) for _, s in param_shapes(new_config)), old_flat.dtype)
        old_views, new_views = _views(old_flat, old_config), _views(new_flat, new_config)
        for name, v in new_views.items():
            if name in old_views and old_views[name].shape == v.shape:
                v[:] = old_views[name]
        return new_flat


def decay_mask(config: GPTConfig, dtype=np.float32) -> np.ndarray:
    """The AdamW weight-decay mask over the flat buffer: 1 on 2-D tensors, 0 elsewhere."""
    parts = [
        np.full(math.prod(s), 1.0 if len(s) == 2 else 0.0, dtype) for _, s in param_shapes(config)
    ]
    return np.concatenate(parts)
