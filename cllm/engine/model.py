"""GPT-2 in NumPy and numba: forward and backward written by hand, layer by layer (llm.c style).

Parameters and gradients live in one flat buffer each; ``p[name]`` / ``g[name]`` are views in
the order of ``config.param_shapes``. Matrices are stored ``[in, out]`` (GPT-2's Conv1D), so every
product is ``x @ W`` with no transposes. Activations are allocated once per (B, T) and reused.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cllm.engine import kernels as K
from cllm.engine.config import GPTConfig, param_shapes
from cllm.errors import ValidationError


def _views(flat: np.ndarray, cfg: GPTConfig) -> dict[str, np.ndarray]:
    views, off = {}, 0
    for name, shape in param_shapes(cfg):
        n = math.prod(shape)
        views[name] = flat[off : off + n].reshape(shape)
        off += n
    return views


def _offsets(cfg: GPTConfig) -> np.ndarray:
    """Where each tensor starts in the flat buffer, in param_shapes order."""
    sizes = [math.prod(s) for _, s in param_shapes(cfg)]
    return np.cumsum([0] + sizes[:-1]).astype(np.int64)


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
        self.idx: np.ndarray | None = None
        self.ones = np.ones(N, dtype)


class KVCache:
    """Keys and values of every layer for up to block_size positions; ``pos`` is the next slot."""

    def __init__(self, cfg: GPTConfig, batch: int, dtype):
        shape = (cfg.n_layer, batch, cfg.n_head, cfg.block_size, cfg.head_size)
        self.k = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)
        self.batch = batch
        self.pos = 0
        if batch == 1:  # scratch for the one-call decode of a single token
            D, F, C, V = cfg.n_embd, cfg.n_inner, cfg.block_size, cfg.vocab_size
            e = lambda n: np.empty(n, dtype)  # noqa: E731
            self.scratch = (e(D), e(D), e(3 * D), e(D), e(F), e(C), e(V))


class Shard:
    """One worker's slice of the batch: rows b0:b1, its activations and its own gradients."""

    def __init__(self, gpt: GPT, b0: int, b1: int, T: int, grads: np.ndarray):
        self.b0, self.b1 = b0, b1
        self.acts = Activations(gpt.config, b1 - b0, T, gpt.dtype)
        self.grads = grads
        self.g = _views(grads, gpt.config)
        self.gl = [_block_views(self.g, l) for l in range(gpt.config.n_layer)]


def _blas_one_thread() -> None:
    """Each worker thread runs single-threaded BLAS: the cores are shared out by batch slices,
    which keeps every core busy in the numba kernels too and needs no spinning thread barriers.
    Only NumPy's OpenBLAS is limited (PyTorch's own pool, in the benchmark, is left alone), and
    again whenever someone raised it since (a ctypes call, ~1 us)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController().select(internal_api="openblas").lib_controllers
    for lib in _BLAS:
        if lib.get_num_threads() != 1:
            lib.set_num_threads(1)


_BLAS: list | None = None
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def run_parallel(fn, items: list) -> list:
    """fn(item) for every item: the first on this thread, the rest on the worker pool."""
    global _POOL, _POOL_SIZE
    if len(items) == 1:
        return [fn(items[0])]
    if _POOL_SIZE < len(items) - 1:
        _POOL = ThreadPoolExecutor(max_workers=len(items) - 1, thread_name_prefix="cllm-gpt")
        _POOL_SIZE = len(items) - 1
    futures = [_POOL.submit(fn, it) for it in items[1:]]
    first = fn(items[0])
    return [first] + [f.result() for f in futures]


def chunks(n: int, parts: int) -> list[slice]:
    """[0, n) cut into ``parts`` nearly equal ranges."""
    return [slice(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def default_threads() -> int:
    """The engine takes as many threads as numba is given (NUMBA_NUM_THREADS, default every
    core, or numba.set_num_threads in this thread)."""
    import numba

    return numba.get_num_threads()


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
    ):
        self.config = config
        self.dtype = np.dtype(dtype)
        self.threads = threads
        self.n_params = sum(math.prod(s) for _, s in param_shapes(config))
        self.params = np.zeros(self.n_params, self.dtype)
        self.grads = np.zeros(self.n_params, self.dtype)
        self.p = _views(self.params, config)
        self.g = _views(self.grads, config)
        self.pl = [_block_views(self.p, l) for l in range(config.n_layer)]
        self._offsets = _offsets(config)
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

    def _plan(self, B: int, T: int) -> list[Shard]:
        """Slices of the batch with their buffers; the last two shapes are kept (training and
        validation batches may differ) so that alternating between them allocates nothing."""
        S = max(1, min(self.threads or default_threads(), B))
        if B * T < 256:  # too little work to be worth a thread handoff
            S = 1
        key = (B, T, S)
        if key not in self._plans:
            while len(self._shard_grads) < S:  # slice 0 writes the model's own gradients
                self._shard_grads.append(
                    self.grads if not self._shard_grads else np.zeros(self.n_params, self.dtype)
                )
            cuts = [B * i // S for i in range(S + 1)]
            self._plans[key] = [
                Shard(self, cuts[i], cuts[i + 1], T, self._shard_grads[i]) for i in range(S)
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
        _blas_one_thread()

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
            w = self.pl[l]
            K.layernorm_forward(
                a.ln1[l], a.ln1_mean[l], a.ln1_rstd[l], a.resid[l], w["ln_1.weight"], w["ln_1.bias"]
            )
            matmul_forward(a.qkv[l], a.ln1[l], w["attn.c_attn.weight"], w["attn.c_attn.bias"])
            attention_forward(a.atty[l], a.att[l], a.qkv[l], B, T, H)
            matmul_forward(
                a.resid_mid[l], a.atty[l], w["attn.c_proj.weight"], w["attn.c_proj.bias"]
            )
            a.resid_mid[l] += a.resid[l]
            K.layernorm_forward(
                a.ln2[l],
                a.ln2_mean[l],
                a.ln2_rstd[l],
                a.resid_mid[l],
                w["ln_2.weight"],
                w["ln_2.bias"],
            )
            np.matmul(a.ln2[l], w["mlp.c_fc.weight"], out=a.fch[l])
            K.bias_gelu_forward(a.fch_gelu[l], a.fch[l], w["mlp.c_fc.bias"])
            matmul_forward(
                a.resid[l + 1], a.fch_gelu[l], w["mlp.c_proj.weight"], w["mlp.c_proj.bias"]
            )
            a.resid[l + 1] += a.resid_mid[l]
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
        g["wpe"][:] = 0.0
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
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:  # the kernel reads rows unchecked
            raise ValidationError(f"token ids must lie in 0..{cfg.vocab_size - 1}")
        if B == 1 and T == 1:
            L, H, C = cfg.n_layer, cfg.n_head, cfg.block_size
            sc = cache.scratch
            kc, vc = (c.reshape(L, H, C, cfg.head_size) for c in (cache.k, cache.v))
            K.decode_one(self.params, self._offsets, kc, vc, pos, int(ids[0, 0]), *sc)
            cache.pos = pos + 1
            return sc[-1].reshape(1, 1, -1).copy()
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
        self.pl = [_block_views(self.p, l) for l in range(n_layer)]
        self._offsets = _offsets(new)
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
