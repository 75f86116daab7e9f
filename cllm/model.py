"""GPT-2 in NumPy and numba: forward and backward written by hand, layer by layer (llm.c style).

Parameters and gradients live in one flat buffer each; ``p[name]`` / ``g[name]`` are views in
the order of ``config.param_shapes``. Matrices are stored ``[in, out]`` (GPT-2's Conv1D), so every
product is ``x @ W`` with no transposes. Activations are allocated once per (B, T) and reused.
"""

from __future__ import annotations

import math

import numpy as np

from . import kernels as K
from .config import GPTConfig, param_shapes
from .errors import ValidationError


def _views(flat: np.ndarray, cfg: GPTConfig) -> dict[str, np.ndarray]:
    views, off = {}, 0
    for name, shape in param_shapes(cfg):
        n = math.prod(shape)
        views[name] = flat[off : off + n].reshape(shape)
        off += n
    return views


# ----------------------------------------------------------------------------------------------
# layer pairs whose work is mostly BLAS: the numba kernels do the rest


def matmul_forward(out, inp, w, b):
    """out[N,O] = inp[N,I] @ w[I,O] + b[O]."""
    np.matmul(inp, w, out=out)
    out += b


def matmul_backward(dinp, dw, db, dout, inp, w):
    """dinp[N,I] = dout @ w.T (overwritten); dw[I,O] = inp.T @ dout; db[O] = sum of dout rows."""
    np.matmul(dout, w.T, out=dinp)
    np.matmul(inp.T, dout, out=dw)
    np.sum(dout, axis=0, out=db)


def attention_forward(y, att, qkv, B, T, H, pos_offset=0, kv=None):
    """Causal self-attention. qkv[B*T, 3D] -> y[B*T, D]; att[B,H,T,Tk] keeps the probabilities.

    With ``kv`` = (k_cache, v_cache) [B,H,C,hs] the new keys and values are written at
    ``pos_offset`` and the queries attend to the whole prefix (decoding).
    """
    D = qkv.shape[1] // 3
    hs = D // H
    q, k, v = (
        qkv[:, i * D : (i + 1) * D].reshape(B, T, H, hs).transpose(0, 2, 1, 3) for i in range(3)
    )
    if kv is not None:
        kc, vc = kv
        end = pos_offset + T
        kc[:, :, pos_offset:end] = k
        vc[:, :, pos_offset:end] = v
        k, v = kc[:, :, :end], vc[:, :, :end]
    np.matmul(q, k.transpose(0, 1, 3, 2), out=att)
    K.attention_softmax_forward(
        att.reshape(B * H, T, att.shape[3]), 1.0 / math.sqrt(hs), pos_offset
    )
    np.matmul(att, v, out=y.reshape(B, T, H, hs).transpose(0, 2, 1, 3))


def attention_backward(dqkv, datt, dy, att, qkv, B, T, H):
    """dqkv[B*T,3D] (overwritten) from dy[B*T,D]; datt[B,H,T,T] is scratch."""
    D = qkv.shape[1] // 3
    hs = D // H

    def heads(a, i):
        return a[:, i * D : (i + 1) * D].reshape(B, T, H, hs).transpose(0, 2, 1, 3)

    q, k, v = heads(qkv, 0), heads(qkv, 1), heads(qkv, 2)
    dq, dk, dv = heads(dqkv, 0), heads(dqkv, 1), heads(dqkv, 2)
    dyh = dy.reshape(B, T, H, hs).transpose(0, 2, 1, 3)
    np.matmul(dyh, v.transpose(0, 1, 3, 2), out=datt)
    np.matmul(att.transpose(0, 1, 3, 2), dyh, out=dv)
    K.attention_softmax_backward(
        datt.reshape(B * H, T, T), att.reshape(B * H, T, T), 1.0 / math.sqrt(hs)
    )
    np.matmul(datt, k, out=dq)
    np.matmul(datt.transpose(0, 1, 3, 2), q, out=dk)


class Activations:
    """Every buffer one training step needs for a given (B, T), allocated once."""

    def __init__(self, cfg: GPTConfig, B: int, T: int, dtype):
        L, D, F, H, V, N = cfg.n_layer, cfg.n_embd, cfg.n_inner, cfg.n_head, cfg.vocab_size, B * T
        e = lambda *s: np.empty(s, dtype)  # noqa: E731
        self.B, self.T = B, T
        self.resid = e(L + 1, N, D)  # input of block l; resid[L] feeds ln_f
        self.resid_mid = e(L, N, D)  # after the attention half of block l
        self.ln1, self.ln1_mean, self.ln1_rstd = e(L, N, D), e(L, N), e(L, N)
        self.ln2, self.ln2_mean, self.ln2_rstd = e(L, N, D), e(L, N), e(L, N)
        self.qkv = e(L, N, 3 * D)
        self.att = e(L, B, H, T, T)
        self.atty = e(L, N, D)
        self.fch = e(L, N, F)  # pre-GELU
        self.fch_gelu = e(L, N, F)
        self.lnf, self.lnf_mean, self.lnf_rstd = e(N, D), e(N), e(N)
        self.logits = e(N, V)  # becomes dlogits after the fused cross-entropy
        self.losses = e(N)
        # backward scratch
        self.dresid, self.dx, self.datty = e(N, D), e(N, D), e(N, D)
        self.dqkv, self.dfch, self.datt = e(N, 3 * D), e(N, F), e(B, H, T, T)


class KVCache:
    """Keys and values of every layer for up to block_size positions; ``pos`` is the next slot."""

    def __init__(self, cfg: GPTConfig, batch: int, dtype):
        shape = (cfg.n_layer, batch, cfg.n_head, cfg.block_size, cfg.head_size)
        self.k = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)
        self.batch = batch
        self.pos = 0


class GPT:
    """The model of spec section 1. ``dtype`` float64 exists for the gradient checks."""

    def __init__(self, config: GPTConfig, seed: int = 0, dtype=np.float32, init: bool = True):
        self.config = config
        self.dtype = np.dtype(dtype)
        self.n_params = sum(math.prod(s) for _, s in param_shapes(config))
        self.params = np.zeros(self.n_params, self.dtype)
        self.grads = np.zeros(self.n_params, self.dtype)
        self.p = _views(self.params, config)
        self.g = _views(self.grads, config)
        self.acts: Activations | None = None
        self._idx: np.ndarray | None = None
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

    # ------------------------------------------------------------------------------------------
    def forward(self, idx: np.ndarray, targets: np.ndarray | None = None):
        """idx int [B, T] -> mean cross-entropy (float) with targets, else logits [B, T, V]."""
        idx = np.ascontiguousarray(idx, dtype=np.int32)
        if idx.ndim != 2:
            raise ValidationError(f"token ids must be a [batch, time] array, got shape {idx.shape}")
        B, T = idx.shape
        cfg = self.config
        if not 1 <= T <= cfg.block_size:
            raise ValidationError(f"sequence length {T} is outside 1..{cfg.block_size}")
        if idx.size and (idx.min() < 0 or idx.max() >= cfg.vocab_size):
            raise ValidationError(f"token ids must lie in 0..{cfg.vocab_size - 1}")
        a = self.acts
        if a is None or (a.B, a.T) != (B, T):
            a = self.acts = Activations(cfg, B, T, self.dtype)
        p, H = self.p, cfg.n_head
        N = B * T
        x0 = a.resid[0].reshape(B, T, -1)
        np.take(p["wte"], idx, axis=0, out=x0)
        x0 += p["wpe"][:T]
        for l in range(cfg.n_layer):
            h = f"h.{l}."
            K.layernorm_forward(
                a.ln1[l],
                a.ln1_mean[l],
                a.ln1_rstd[l],
                a.resid[l],
                p[h + "ln_1.weight"],
                p[h + "ln_1.bias"],
            )
            matmul_forward(
                a.qkv[l], a.ln1[l], p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"]
            )
            attention_forward(a.atty[l], a.att[l], a.qkv[l], B, T, H)
            matmul_forward(
                a.resid_mid[l], a.atty[l], p[h + "attn.c_proj.weight"], p[h + "attn.c_proj.bias"]
            )
            a.resid_mid[l] += a.resid[l]
            K.layernorm_forward(
                a.ln2[l],
                a.ln2_mean[l],
                a.ln2_rstd[l],
                a.resid_mid[l],
                p[h + "ln_2.weight"],
                p[h + "ln_2.bias"],
            )
            np.matmul(a.ln2[l], p[h + "mlp.c_fc.weight"], out=a.fch[l])
            K.bias_gelu_forward(a.fch_gelu[l], a.fch[l], p[h + "mlp.c_fc.bias"])
            matmul_forward(
                a.resid[l + 1], a.fch_gelu[l], p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"]
            )
            a.resid[l + 1] += a.resid_mid[l]
        L = cfg.n_layer
        K.layernorm_forward(
            a.lnf, a.lnf_mean, a.lnf_rstd, a.resid[L], p["ln_f.weight"], p["ln_f.bias"]
        )
        np.matmul(a.lnf, p["wte"].T, out=a.logits)  # the head is tied to the token embedding
        self._idx = idx
        if targets is None:
            self._have_dlogits = False
            return a.logits.reshape(B, T, -1).copy()
        targets = np.ascontiguousarray(targets, dtype=np.int32).reshape(N)
        if targets.min() < 0 or targets.max() >= cfg.vocab_size:
            raise ValidationError(f"target ids must lie in 0..{cfg.vocab_size - 1}")
        K.crossentropy_forward_backward(a.logits, targets, a.losses, 1.0 / N)
        self._have_dlogits = True
        return float(a.losses.mean())

    @property
    def losses(self) -> np.ndarray:
        """Per-position losses [B, T] of the last forward with targets."""
        return self.acts.losses.reshape(self.acts.B, self.acts.T)

    def backward(self) -> None:
        """Fill ``grads`` (overwriting them) with d(mean loss)/d(params) of the last forward."""
        if self.acts is None or not getattr(self, "_have_dlogits", False):
            raise RuntimeError("backward() needs a forward(idx, targets) first")
        a, p, g, cfg = self.acts, self.p, self.g, self.config
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
            h = f"h.{l}."
            # MLP half: dresid is the gradient wrt resid[l + 1]
            matmul_backward(
                a.dfch,
                g[h + "mlp.c_proj.weight"],
                g[h + "mlp.c_proj.bias"],
                a.dresid,
                a.fch_gelu[l],
                p[h + "mlp.c_proj.weight"],
            )
            K.gelu_backward(a.dfch, a.fch[l])
            matmul_backward(
                a.dx,
                g[h + "mlp.c_fc.weight"],
                g[h + "mlp.c_fc.bias"],
                a.dfch,
                a.ln2[l],
                p[h + "mlp.c_fc.weight"],
            )
            K.layernorm_backward(
                a.dresid,
                g[h + "ln_2.weight"],
                g[h + "ln_2.bias"],
                a.dx,
                a.resid_mid[l],
                a.ln2_mean[l],
                a.ln2_rstd[l],
                p[h + "ln_2.weight"],
            )
            # attention half: dresid is now the gradient wrt resid_mid[l]
            matmul_backward(
                a.datty,
                g[h + "attn.c_proj.weight"],
                g[h + "attn.c_proj.bias"],
                a.dresid,
                a.atty[l],
                p[h + "attn.c_proj.weight"],
            )
            attention_backward(a.dqkv, a.datt, a.datty, a.att[l], a.qkv[l], B, T, H)
            matmul_backward(
                a.dx,
                g[h + "attn.c_attn.weight"],
                g[h + "attn.c_attn.bias"],
                a.dqkv,
                a.ln1[l],
                p[h + "attn.c_attn.weight"],
            )
            K.layernorm_backward(
                a.dresid,
                g[h + "ln_1.weight"],
                g[h + "ln_1.bias"],
                a.dx,
                a.resid[l],
                a.ln1_mean[l],
                a.ln1_rstd[l],
                p[h + "ln_1.weight"],
            )
        g["wpe"][:] = 0.0
        K.embedding_backward(g["wte"], g["wpe"], a.dresid.reshape(B, T, -1), self._idx)
        self._have_dlogits = False  # dlogits were consumed in place

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """ids [T] -> [T, V]; ids [B, T] -> [B, T, V]."""
        ids = np.asarray(ids)
        if ids.ndim == 1:
            return self.forward(ids[None])[0]
        return self.forward(ids)

    # ------------------------------------------------------------------------------------------
    def new_cache(self, batch: int = 1) -> KVCache:
        return KVCache(self.config, batch, self.dtype)

    def decode(self, ids: np.ndarray, cache: KVCache) -> np.ndarray:
        """Run ids [B, t] at positions cache.pos.. with the KV cache; returns logits [B, t, V]."""
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        if ids.ndim == 1:
            ids = ids[None]
        B, T = ids.shape
        cfg, p = self.config, self.p
        pos = cache.pos
        if B != cache.batch:
            raise ValidationError(f"cache holds batch {cache.batch}, got {B}")
        if pos + T > cfg.block_size:
            raise ValidationError(f"the cache holds {cfg.block_size} positions; {pos + T} asked")
        if T == 0:
            return np.zeros((B, 0, cfg.vocab_size), self.dtype)
        D, F, H, N = cfg.n_embd, cfg.n_inner, cfg.n_head, B * T
        dt = self.dtype
        x = (p["wte"][ids] + p["wpe"][pos : pos + T]).reshape(N, D).astype(dt)
        ln, mean, rstd = np.empty((N, D), dt), np.empty(N, dt), np.empty(N, dt)
        qkv, y, fch, fcg = (
            np.empty((N, 3 * D), dt),
            np.empty((N, D), dt),
            np.empty((N, F), dt),
            np.empty((N, F), dt),
        )
        att = np.empty((B, H, T, pos + T), dt)
        tmp = np.empty((N, D), dt)
        for l in range(cfg.n_layer):
            h = f"h.{l}."
            K.layernorm_forward(ln, mean, rstd, x, p[h + "ln_1.weight"], p[h + "ln_1.bias"])
            matmul_forward(qkv, ln, p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"])
            attention_forward(y, att, qkv, B, T, H, pos, (cache.k[l], cache.v[l]))
            matmul_forward(tmp, y, p[h + "attn.c_proj.weight"], p[h + "attn.c_proj.bias"])
            x += tmp
            K.layernorm_forward(ln, mean, rstd, x, p[h + "ln_2.weight"], p[h + "ln_2.bias"])
            np.matmul(ln, p[h + "mlp.c_fc.weight"], out=fch)
            K.bias_gelu_forward(fcg, fch, p[h + "mlp.c_fc.bias"])
            matmul_forward(tmp, fcg, p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"])
            x += tmp
        K.layernorm_forward(ln, mean, rstd, x, p["ln_f.weight"], p["ln_f.bias"])
        cache.pos = pos + T
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
        self.acts = None
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
