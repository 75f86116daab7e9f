"""A language model as a user holds it: the GPT, its tokenizer, its metadata and training state.

lm = cllm.load_model("models/demo.cllm")
lm.logits(lm.tokenizer.encode("Hello"))        # [T, V]
for piece in lm.generate("Hello", max_tokens=50):
    print(piece, end="", flush=True)
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cllm.engine.config import GPTConfig, TrainConfig
from cllm.engine.generate import sample_stream
from cllm.engine.meta import ModelMeta
from cllm.engine.model import GPT
from cllm.engine.modelfile import load_model_file, save_model_file
from cllm.engine.tokenizer import StreamDecoder, Tokenizer
from cllm.errors import ModelFileError, ValidationError


def new_meta(name: str) -> ModelMeta:
    return ModelMeta.new(name)


class LanguageModel:
    def __init__(
        self,
        gpt: GPT,
        tokenizer: Tokenizer,
        name: str,
        meta: ModelMeta | dict | None = None,
        train_config: TrainConfig | None = None,
        optim_state: dict | None = None,
        train_state: dict | None = None,
        history: dict | None = None,
    ) -> None:
        if tokenizer.vocab_size != gpt.config.vocab_size:
            raise ValidationError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary is "
                f"{gpt.config.vocab_size}"
            )
        self.gpt = gpt
        self.tokenizer = tokenizer
        self.name = name
        if isinstance(meta, dict):
            meta = ModelMeta.from_dict({**ModelMeta.new(name).to_dict(), **meta})
        self.meta: ModelMeta = meta if meta is not None else ModelMeta.new(name)
        self.train_config = train_config or TrainConfig()
        self.optim_state = optim_state  # {"m", "v", "t"} for exact resume
        self.train_state = train_state  # position in the epoch, rng state, ...
        self.history = history or {}  # "steps", "train", "val": per-step loss arrays
        self.nonfinite = 0  # NaN or infinite weights found when it was loaded

    @classmethod
    def create(
        cls,
        config: GPTConfig,
        tokenizer: Tokenizer,
        name: str,
        seed: int = 0,
        train: TrainConfig | None = None,
    ) -> LanguageModel:
        """A freshly initialised model (GPT-2 init) that has seen no data."""
        if tokenizer.vocab_size != config.vocab_size:
            raise ValidationError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary is "
                f"{config.vocab_size}"
            )
        return cls(GPT(config, seed=seed), tokenizer, name, train_config=train or TrainConfig())

    @property
    def config(self) -> GPTConfig:
        return self.gpt.config  # follows grow_layers

    def __repr__(self) -> str:
        c = self.config
        return (
            f"LanguageModel({self.name!r}, {self.tokenizer.kind} V={c.vocab_size} D={c.n_embd} "
            f"L={c.n_layer} H={c.n_head} C={c.block_size})"
        )

    # ------------------------------------------------------------------------------ inference

    def logits(self, ids: np.ndarray | list) -> np.ndarray:
        """Next-token logits: ids [T] -> [T, V]; ids [B, T] -> [B, T, V] (float32)."""
        a = np.asarray(ids)
        if a.ndim not in (1, 2):
            raise ValidationError(f"token ids must be [T] or [B, T], got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValidationError(f"token ids must be integers, got {a.dtype}")
        T, V, C = a.shape[-1], self.config.vocab_size, self.config.block_size
        if not 1 <= T <= C or a.shape[0] == 0:
            raise ValidationError(f"sequence length must be 1 to {C} tokens, got shape {a.shape}")
        if a.min() < 0 or a.max() >= V:
            raise ValidationError(f"token ids must be in [0, {V}), got {a.min()}..{a.max()}")
        out = self.gpt.forward(a.reshape(-1, T).astype(np.int32))
        return out[0] if a.ndim == 1 else out

    def generate(
        self,
        prompt: str,
        max_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int = 50,
        top_p: float = 0.9,
        seed: int | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        """Stream the continuation of ``prompt`` as text pieces; ends at ``max_tokens`` new
        tokens, at end-of-text, or when ``stop`` is set. An empty prompt starts a new document."""
        _check_sampling(max_tokens, temperature, top_k, top_p, seed)
        self.check_finite("generate text")
        ids = self.tokenizer.encode(prompt)
        dec = StreamDecoder(self.tokenizer)
        stream = sample_stream(
            self.gpt,
            ids,
            int(max_tokens),
            float(temperature),
            int(top_k),
            float(top_p),
            seed,
            self.tokenizer.eot_id,
            stop,
        )
        for tok in stream:
            piece = dec.feed(tok)
            if piece:
                yield piece
        tail = dec.flush()
        if tail:
            yield tail

    def check_finite(self, to: str) -> None:
        """Refuse (ModelFileError) when loaded weights were NaN or infinite (a diverged run)."""
        if self.nonfinite:
            raise ModelFileError(
                f"model {self.name!r} has {self.nonfinite:,} weights that are NaN or infinite "
                f"(its training diverged): it cannot {to}; train a copy from an earlier export"
            )

    # ------------------------------------------------------------------------------ storage

    def save(self, path: str | Path) -> None:
        """Write the model file atomically (old or new survives a crash, never a torn file)."""
        self.meta.name = self.name
        save_model_file(
            path,
            config=self.config,
            tokenizer=self.tokenizer,
            params=self.gpt.params,
            meta=self.meta,
            train=self.train_config,
            optim_state=self.optim_state,
            train_state=self.train_state,
            history=self.history,
        )


def _check_sampling(max_tokens, temperature, top_k, top_p, seed) -> None:
    def is_int(x):
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)

    def is_num(x):
        return isinstance(x, numbers.Real) and not isinstance(x, bool)

    if not is_int(max_tokens) or not 1 <= max_tokens <= 1_000_000:
        raise ValidationError(
            f"max tokens must be an integer from 1 to 1000000, got {max_tokens!r}"
        )
    if not is_num(temperature) or not 0 <= temperature <= 100:
        raise ValidationError(f"temperature must be from 0 (greedy) to 100, got {temperature!r}")
    if not is_int(top_k) or top_k < 0:
        raise ValidationError(f"top-k must be an integer >= 0 (0: off), got {top_k!r}")
    if not is_num(top_p) or not 0 < top_p <= 1:
        raise ValidationError(f"top-p must be in (0, 1] (1: off), got {top_p!r}")
    if seed is not None and (not is_int(seed) or seed < 0):
        raise ValidationError(f"seed must be a non-negative integer, got {seed!r}")


def load_model(path: str | Path) -> LanguageModel:
    """Load a ``.cllm`` file (fully validated; ``ModelFileError`` naming the file otherwise)."""
    d = load_model_file(path)
    gpt = GPT(d.config, init=False)
    gpt.params[:] = d.params
    name = d.meta.name or Path(path).stem
    lm = LanguageModel(
        gpt,
        d.tokenizer,
        name,
        meta=d.meta,
        train_config=d.train,
        optim_state=d.optim_state,
        train_state=d.train_state,
        history=d.history,
    )
    lm.nonfinite = d.nonfinite
    return lm
