"""AdamW over the flat parameter buffer, the learning-rate schedule, and global-norm clipping."""

from __future__ import annotations

import math

import numpy as np

from cllm.engine import kernels as K
from cllm.engine.config import SCHEDULES, GPTConfig
from cllm.engine.model import GPT, chunks, default_threads, run_parallel

PARALLEL_MIN = 1 << 16  # below this many entries one thread is faster than a handoff


def _parts(n: int) -> list[slice]:
    return chunks(n, default_threads() if n >= PARALLEL_MIN else 1)


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), the update torch.optim.AdamW does.

    ``decay_mask`` (flat, 1 or 0 per entry) says which entries decay: the matrices, not biases or
    LayerNorm parameters. Moments ``m``, ``v`` are flat like the parameters; ``t`` counts steps.
    """

    def __init__(
        self,
        n_params: int,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        decay_mask: np.ndarray | None = None,
        dtype=np.float32,
    ):
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.m = np.zeros(n_params, dtype)
        self.v = np.zeros(n_params, dtype)
        self.t = 0
        if decay_mask is None:
            decay_mask = np.ones(n_params, dtype)
        if decay_mask.shape != (n_params,):
            raise ValueError(f"decay_mask has shape {decay_mask.shape}, expected ({n_params},)")
        self.decay_mask = np.ascontiguousarray(decay_mask, dtype=dtype)

    @classmethod
    def for_model(cls, gpt, **kwargs) -> AdamW:
        """An optimizer sized for ``gpt`` with weight decay on its matrices only."""
        return cls(gpt.n_params, decay_mask=gpt.decay_mask(), dtype=gpt.dtype, **kwargs)

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float | None = None) -> None:
        """Update ``params`` in place from ``grads``; ``lr`` overrides the stored rate."""
        if params.shape != self.m.shape or grads.shape != self.m.shape:
            raise ValueError(f"optimizer holds {self.m.size} entries, got {params.size}")
        self.t += 1
        b1, b2 = self.betas
        lr = self.lr if lr is None else lr

        def update(r: slice) -> None:  # each thread a range of the flat buffers
            K.adamw_update(
                params[r],
                grads[r],
                self.m[r],
                self.v[r],
                self.decay_mask[r],
                lr,
                b1,
                b2,
                self.eps,
                self.weight_decay,
                self.t,
            )

        run_parallel(update, _parts(self.m.size))

    def state_dict(self) -> dict:
        return {"m": self.m.copy(), "v": self.v.copy(), "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        m, v = np.asarray(state["m"]), np.asarray(state["v"])
        if m.shape != self.m.shape or v.shape != self.v.shape:
            raise ValueError(f"optimizer state has {m.size} entries, expected {self.m.size}")
        self.m[:] = m
        self.v[:] = v
        self.t = int(state["t"])

    def remap(self, old_config: GPTConfig, new_config: GPTConfig, decay_mask: np.ndarray) -> None:
        """Follow the model into a new layout (grown layers): moments of new tensors start at 0."""
        self.m = GPT.remap_flat(old_config, new_config, self.m)
        self.v = GPT.remap_flat(old_config, new_config, self.v)
        self.decay_mask = np.ascontiguousarray(decay_mask, dtype=self.m.dtype)




def lr_at(
    step: int,
    max_steps: int,
    warmup: int,
    max_lr: float,
    min_lr: float,
    schedule: str = "cosine",
) -> float:
    """Linear warmup over ``warmup`` steps, then decay to ``min_lr`` at ``max_steps``: a half
    cosine, a straight line, or none (``constant`` stays at ``max_lr``). Past ``max_steps`` the
    rate stays at ``min_lr`` (``constant``: ``max_lr``)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if schedule == "constant":
        return max_lr
    if step >= max_steps:
        return min_lr
    ratio = (step - warmup) / max(1, max_steps - warmup)
    if schedule == "linear":
        return max_lr - ratio * (max_lr - min_lr)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def clip_grad_norm(grads: np.ndarray, max_norm: float) -> float:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm``; returns the norm
    before clipping (as torch.nn.utils.clip_grad_norm_ does)."""
    norm = math.sqrt(float(np.dot(grads, grads)))
    if max_norm > 0 and norm > max_norm:
        grads *= max_norm / (norm + 1e-6)
    return norm
