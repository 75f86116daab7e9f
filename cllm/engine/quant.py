"""Weight-only quantisation for decoding: int8 per output channel.

Decoding one token reads every weight once, so its speed is the memory's: fewer bytes per
weight, more tokens per second. Following llama.cpp's idea (small blocks, one scale each) with
our own kernels (``kernels.decode_step`` turns the integers back into floats in registers):

- ``int8``: a matrix W[in, out] is stored transposed, q[out, in], with one scale per output
  channel s = max |W[:, o]| / 127, so that W[i, o] ~ q[o, i] s[o]. 1 byte per weight.
The tied head and token embedding is int8 rows too (its rows are the head's output channels; as
the input embedding a row is read dequantised).

A 4-bit group-wise format (two weights a byte, a scale per 32) was tried and left out: numba
does not vectorise the nibble unpacking on AVX2 (the shifts and int64 conversions stay scalar),
so it ran 10x slower than int8 at 0.6 bytes a weight, and decoding was compute-bound.

Training always stays float32; this is a copy made for generation.

Float weights decoding several streams at once read their matrices from a second copy, in
panels (``pack_panels``): made when first needed and made again whenever the parameters have
changed since (``DecodeWeights.panel_weights``).
"""

from __future__ import annotations

import math

import numpy as np

from cllm.engine.config import GPTConfig, param_shapes
from cllm.engine.kernels import DECODE_BLOCK, PANEL_LANES
from cllm.errors import ValidationError

FORMATS = ("none", "int8")
MATRICES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def check_format(quant: str, cfg: GPTConfig) -> str:
    if quant not in FORMATS:
        raise ValidationError(f"quantisation must be one of {', '.join(FORMATS)}, got {quant!r}")
    return quant


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W[in, out] -> (q[out, in] int8, scale[out] float32); rows of zeros, and rows so small that
    their scale underflows float32 (which made 0 / 0 and a NaN cast to int8), get scale 1."""
    wt = np.asarray(w, np.float32).T
    s = (np.abs(wt).max(axis=1) / np.float32(127.0)).astype(np.float32)
    s[s == 0] = 1.0
    q = np.clip(np.rint(wt / s[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q), s


def pack_panels(w: np.ndarray, lanes: int) -> np.ndarray:
    """W[in, out] -> its first out - out % C columns in panels of C = PANEL_LANES * lanes
    columns, [out // C, in, C] flat: a panel's rows one after another, as
    ``kernels._linear_panels`` streams them."""
    I, O = w.shape
    C = PANEL_LANES * lanes
    m = O // C
    return np.ascontiguousarray(w[:, : m * C].reshape(I, m, C).transpose(1, 0, 2)).reshape(-1)


def dequantize_int8(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The float W[in, out] that (q, s) stands for."""
    return np.ascontiguousarray((q.astype(np.float32) * s[:, None]).T)


def dequantized_params(cfg: GPTConfig, params: np.ndarray, quant: str) -> np.ndarray:
    """A copy of the flat float parameters with every quantised tensor replaced by what its
    quantised form stands for: the model that generation in ``quant`` computes."""
    check_format(quant, cfg)
    out = params.astype(np.float32, copy=True)
    if quant == "none":
        return out
    views, off = {}, 0
    for name, shape in param_shapes(cfg):
        views[name] = out[off : off + math.prod(shape)].reshape(shape)
        off += math.prod(shape)
    for l in range(cfg.n_layer):
        for m in MATRICES:
            v = views[f"h.{l}.{m}"]
            v[:] = dequantize_int8(*quantize_int8(v))
    wte = views["wte"]  # the tied head and input embedding: int8 rows
    wte[:] = dequantize_int8(*quantize_int8(wte.T)).T
    return out


class DecodeWeights:
    """What ``kernels.decode_step`` reads, for one format, built from the flat parameters.

    Float ("none"): views of the parameters themselves, nothing copied. Quantised: the block
    matrices as one [L, Q] integer buffer with their scales, and the head as int8 rows; the
    LayerNorms, biases and position embeddings stay float views. ``bytes_per_token``: the weight
    bytes one decoding step reads.
    """

    def __init__(self, cfg: GPTConfig, params: np.ndarray, quant: str = "none"):
        self.quant = check_format(quant, cfg)
        L = cfg.n_layer
        offs, off = {}, 0
        for name, shape in param_shapes(cfg):
            offs[name] = (off, shape)
            off += math.prod(shape)

        def view(name):
            o, shape = offs[name]
            return params[o : o + math.prod(shape)].reshape(shape)

        base = offs["h.0.ln_1.weight"][0]
        size = (offs["h.1.ln_1.weight"][0] if L > 1 else offs["ln_f.weight"][0]) - base
        self.wpe = view("wpe")
        self.blocks = params[base : base + L * size].reshape(L, size)
        self.offs = np.array([offs["h.0." + k][0] - base for k in DECODE_BLOCK], np.int64)
        self.lnf_w, self.lnf_b = view("ln_f.weight"), view("ln_f.bias")
        self._shapes = {m: offs["h.0." + m][1] for m in MATRICES}
        self._panels: tuple | None = None  # (panels, poffs, hp, stamp) once several rows ask
        empty = np.zeros(0, params.dtype)
        self.no_panels = (np.zeros((L, 0), params.dtype), np.zeros(12, np.int64), empty)
        if quant == "none":
            self.wq, self.woffs = self.blocks, self.offs
            self.sq, self.soffs = np.ones((L, 1), params.dtype), np.zeros(12, np.int64)
            self.head, self.head_s = view("wte"), np.ones(1, params.dtype)
            self.bytes_per_token = params.dtype.itemsize * (self.blocks.size + self.head.size)
            return
        parts = [[quantize_int8(view(f"h.{l}.{m}")) for m in MATRICES] for l in range(L)]
        self.woffs, self.soffs = np.zeros(12, np.int64), np.zeros(12, np.int64)
        wo = so = 0
        for m, (q, s) in zip(MATRICES, parts[0], strict=True):
            k = DECODE_BLOCK.index(m)
            self.woffs[k], self.soffs[k] = wo, so
            wo, so = wo + q.size, so + s.size
        self.wq = np.empty((L, wo), q.dtype)
        self.sq = np.empty((L, so), np.float32)
        for l in range(L):
            for m, (q, s) in zip(MATRICES, parts[l], strict=True):
                k = DECODE_BLOCK.index(m)
                self.wq[l, self.woffs[k] : self.woffs[k] + q.size] = q.reshape(-1)
                self.sq[l, self.soffs[k] : self.soffs[k] + s.size] = s.reshape(-1)
        q, s = quantize_int8(view("wte").T)  # rows of wte are the head's output channels
        self.head, self.head_s = q, s
        n_mat = sum(math.prod(offs["h.0." + m][1]) for m in MATRICES)
        float_bytes = params.dtype.itemsize * (self.blocks.size - L * n_mat)
        self.bytes_per_token = self.wq.nbytes + self.sq.nbytes + q.nbytes + s.nbytes + float_bytes

    # The parameters a panel copy was made from are told apart by the bits of a sample of the
    # blocks: an optimizer step moves every element (weight decay alone moves a matrix's by
    # more than its rounding), and a load replaces them all. Taking it costs a few microseconds
    # a step (a cache line per sample).
    STAMP_SAMPLES = 1024

    def _stamp(self) -> bytes:
        flat, head = self.blocks.reshape(-1), self.head.reshape(-1)
        return (
            flat[:: max(1, flat.size // self.STAMP_SAMPLES)].tobytes()
            + head[:: max(1, head.size // self.STAMP_SAMPLES)].tobytes()
        )

    def panel_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pw[L, P], poffs[12], hp): the float block matrices in panels (``pack_panels``), at
        poffs[k] for DECODE_BLOCK[k], and the head's transpose [D, V] in panels (hp), for steps
        of 2 or more rows. Made on first use, and again when the parameters have changed since
        (training in place, a load): each call compares a sample of them. Int8 weights have
        none (empty arrays)."""
        if self.quant != "none":
            return self.no_panels
        stamp = self._stamp()
        got = self._panels
        if got is not None and got[3] == stamp:
            return got[:3]
        L = self.blocks.shape[0]
        lanes = 32 // self.blocks.dtype.itemsize  # a 256-bit vector's elements
        C = PANEL_LANES * lanes
        poffs, size = np.zeros(12, np.int64), 0
        for m in MATRICES:
            I, O = self._shapes[m]
            poffs[DECODE_BLOCK.index(m)] = size
            size += I * (O - O % C)
        pw = np.empty((L, size), self.blocks.dtype)
        for l in range(L):
            for m in MATRICES:
                k = DECODE_BLOCK.index(m)
                I, O = self._shapes[m]
                w = self.blocks[l, self.offs[k] : self.offs[k] + I * O].reshape(I, O)
                part = pack_panels(w, lanes)
                pw[l, poffs[k] : poffs[k] + part.size] = part
        hp = pack_panels(self.head.T, lanes)
        self._panels = (pw, poffs, hp, stamp)
        return pw, poffs, hp
