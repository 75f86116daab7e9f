"""The same GPT-2 in PyTorch eager: the reference our engine is checked and timed against.

Needs torch (the optional ``bench`` extra), so nothing in ``cllm`` imports this module at import
time. Parameter names and layouts are exactly those of ``config.param_shapes``: matrices are
``[in, out]`` as in GPT-2's Conv1D, so our flat buffer loads tensor by tensor with no transposes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cllm.engine.config import GPTConfig, param_shapes

LN_EPS = 1e-5


class Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored [in, out]."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(
            *x.shape[:-1], -1
        )


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = Conv1D(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor, kv: tuple | None = None, pos: int = 0) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=2)
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # decoding: write this step's keys and values into the cache, attend to the prefix
            ck, cv = kv
            ck[:, :, pos : pos + T] = k
            cv[:, :, pos : pos + T] = v
            k, v = ck[:, :, : pos + T], cv[:, :, : pos + T]
            mask = None
            if T > 1:  # query i sits at position pos + i and sees keys up to there
                mask = torch.ones(T, pos + T, dtype=torch.bool).tril(diagonal=pos)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = Conv1D(cfg.n_embd, cfg.n_inner)
        self.c_proj = Conv1D(cfg.n_inner, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, kv: tuple | None = None, pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv, pos)
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)

    def tensor(self, name: str) -> torch.Tensor:
        """The parameter under our flat-buffer name (``wte``/``wpe`` are the embedding weights)."""
        return self.get_parameter(name + ".weight" if name in ("wte", "wpe") else name)

    def load_flat(self, params: np.ndarray) -> None:
        """Copy our flat float32 buffer in, tensor by tensor, in ``param_shapes`` order."""
        off = 0
        with torch.no_grad():
            for name, shape in param_shapes(self.config):
                n = math.prod(shape)
                self.tensor(name).copy_(torch.from_numpy(params[off : off + n].reshape(shape)))
                off += n
        assert off == params.size, f"flat buffer has {params.size} floats, model needs {off}"

    def flat(self, grads: bool = False) -> np.ndarray:
        """Parameters (or gradients) as one flat float32 array in our buffer's order."""
        parts = []
        for name, _ in param_shapes(self.config):
            t = self.tensor(name)
            t = t.grad if grads else t
            parts.append(t.detach().reshape(-1).numpy())
        return np.concatenate(parts)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: list | None = None,
        pos: int = 0,
    ):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(pos, pos + T))
        for i, block in enumerate(self.h):
            x = block(x, None if cache is None else cache[i], pos)
        logits = self.ln_f(x) @ self.wte.weight.t()  # the head is tied to the token embedding
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1).long())

    def new_cache(self, batch: int = 1) -> list:
        cfg = self.config
        shape = (batch, cfg.n_head, cfg.block_size, cfg.head_size)
        return [(torch.zeros(shape), torch.zeros(shape)) for _ in range(cfg.n_layer)]


def from_flat(cfg: GPTConfig, params: np.ndarray) -> TorchGPT:
    model = TorchGPT(cfg)
    model.load_flat(params)
    return model


def make_optimizer(
    model: TorchGPT,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.99),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on the matrices only, as our optimizer does."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)


def train_step(
    model: TorchGPT,
    opt: torch.optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    grad_clip: float = 1.0,
) -> tuple[float, float]:
    """Forward, backward, global-norm clip, AdamW. Returns (loss, grad norm before clipping)."""
    for group in opt.param_groups:
        group["lr"] = lr
    loss = model(torch.from_numpy(x), torch.from_numpy(y))
    opt.zero_grad(set_to_none=False)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
    opt.step()
    return loss.detach().item(), 0.0 if norm is None else norm.item()


@torch.no_grad()
def generate(
    model: TorchGPT,
    prompt_ids: np.ndarray,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> list[int]:
    """Sample with a key-value cache: the prompt once, then one position per new token."""
    gen = torch.Generator().manual_seed(seed)
    cache = model.new_cache(1)
    ids = torch.as_tensor(np.asarray(prompt_ids, dtype=np.int64)).view(1, -1)
    logits = model(ids, cache=cache, pos=0)[0, -1]
    pos, out = ids.shape[1], []
    for _ in range(min(max_new_tokens, model.config.block_size - pos + 1)):
        if temperature <= 0:
            nxt = int(torch.argmax(logits))
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(F.softmax(logits, -1), 1, generator=gen))
        out.append(nxt)
        if len(out) == max_new_tokens or pos == model.config.block_size:
            break
        logits = model(torch.tensor([[nxt]]), cache=cache, pos=pos)[0, -1]
        pos += 1
    return out
