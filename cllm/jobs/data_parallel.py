"""Data-parallel training of one model on Ray actors: ``python -m cllm.train NAME --ray ADDRESS
--data-parallel N``.

``DataParallelGPT`` stands in for the trainer's ``GPT``: ``forward`` cuts the batch into N row
slices and runs each on an actor (a replica of the model that receives the current weights
through the object store), ``backward`` collects the actors' gradients and sums them, each scaled
by its share of the batch, into the model's gradient buffer: the same sum the engine already does
over its thread slices, across processes. Clipping and the AdamW step stay in the trainer, on the
driver, once per global batch; everything else (data order, validation, checkpoints) is the
trainer's own, so a data-parallel run computes the run a single process would.
"""

from __future__ import annotations

import numpy as np

from cllm.errors import ValidationError


class GradWorker:
    """One replica (a Ray actor): forward and backward of a slice with the weights it is sent."""

    def __init__(self, config: dict, threads: int = 1) -> None:
        from cllm.engine.config import GPTConfig
        from cllm.engine.model import GPT

        self.gpt = GPT(GPTConfig.from_dict(config), init=False, threads=threads)

    def forward(self, params, idx, targets):
        self.gpt.params[:] = params
        out = self.gpt.forward(idx, targets)
        if targets is None:
            return out
        return out, self.gpt.losses

    def backward(self):
        self.gpt.backward()
        return self.gpt.grads

    def pid(self) -> int:
        import os

        return os.getpid()


class DataParallelGPT:
    """The trainer's model, computed on ``actors`` (see the module docstring). Attributes other
    than forward, backward and losses are the wrapped GPT's (the same parameter buffers)."""

    def __init__(self, gpt, actors: list) -> None:
        import ray

        self._ray = ray
        self._gpt = gpt
        self.actors = list(actors)
        self._rows: list[int] = []
        self._losses: np.ndarray | None = None

    def __getattr__(self, name: str):
        return getattr(self._gpt, name)

    def _cuts(self, B: int) -> list[tuple[int, int]]:
        n = min(len(self.actors), B)
        edges = [B * i // n for i in range(n + 1)]
        return [(edges[i], edges[i + 1]) for i in range(n)]

    def forward(self, idx: np.ndarray, targets: np.ndarray | None = None):
        ray = self._ray
        idx = np.ascontiguousarray(idx, dtype=np.int32)
        cuts = self._cuts(idx.shape[0])
        weights = ray.put(self._gpt.params)
        refs = [
            a.forward.remote(weights, idx[a0:a1], None if targets is None else targets[a0:a1])
            for a, (a0, a1) in zip(self.actors, cuts, strict=False)
        ]
        outs = ray.get(refs)
        if targets is None:
            return np.concatenate(outs)
        self._rows = [a1 - a0 for a0, a1 in cuts]
        self._losses = np.concatenate([o[1] for o in outs])
        B = idx.shape[0]
        return float(sum(o[0] * rows for o, rows in zip(outs, self._rows, strict=True)) / B)

    @property
    def losses(self) -> np.ndarray:
        return self._losses

    def backward(self) -> None:
        if not self._rows:
            raise RuntimeError("backward() needs a forward(idx, targets) first")
        grads = self._ray.get([a.backward.remote() for a in self.actors[: len(self._rows)]])
        B = sum(self._rows)
        out = self._gpt.grads
        np.multiply(grads[0], np.float32(self._rows[0] / B), out=out)
        for g, rows in zip(grads[1:], self._rows[1:], strict=True):
            out += g * np.float32(rows / B)
        self._rows = []


def start_actors(config, n: int, threads: int = 1) -> list:
    """N ``GradWorker`` actors on the connected Ray cluster, each with ``threads`` CPUs."""
    import ray

    if n < 1:
        raise ValidationError(f"--data-parallel must be at least 1, got {n}")
    actor = ray.remote(num_cpus=threads)(GradWorker)
    actors = [actor.remote(config.to_dict(), threads) for _ in range(n)]
    ray.get([a.pid.remote() for a in actors])  # started (or an error now, not mid-run)
    return actors


def attach(trainer, address: str, n: int, threads: int = 1) -> list:
    """Make ``trainer`` (not yet started) compute on N actors of the Ray cluster at ``address``."""
    from cllm.jobs.ray_runner import connect

    if trainer.B < n:
        raise ValidationError(
            f"--data-parallel {n} needs a batch of at least {n} sequences (batch size is "
            f"{trainer.B})"
        )
    connect(address)
    actors = start_actors(trainer.gpt.config, n, threads)
    trainer.gpt = DataParallelGPT(trainer.gpt, actors)
    return actors
