"""Architecture and training settings, the presets, and the flat parameter layout.

Parameter names follow GPT-2 (and Hugging Face's ``GPT2Model`` without its ``transformer.``
prefix), and every matrix is stored ``[in, out]`` as GPT-2's Conv1D stores it, so weights map one
to one onto other implementations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from cllm.errors import ValidationError


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 2048  # V
    n_embd: int = 128  # D
    n_layer: int = 4  # L
    n_head: int = 4  # H
    block_size: int = 256  # C, the context length
    n_inner: int = 0  # F, the MLP width; 0 means 4 * n_embd

    def __post_init__(self) -> None:
        if self.n_inner == 0:
            object.__setattr__(self, "n_inner", 4 * self.n_embd)
        validate_gpt_config(self)

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in d.items() if k in known})

    def with_layers(self, n_layer: int) -> GPTConfig:
        return replace(self, n_layer=n_layer)


LIMITS = {
    "vocab_size": (2, 1 << 20),
    "n_embd": (1, 16384),
    "n_layer": (1, 256),
    "n_head": (1, 256),
    "block_size": (1, 1 << 16),
    "n_inner": (1, 65536),
}


def validate_gpt_config(cfg: GPTConfig) -> None:
    for name, (lo, hi) in LIMITS.items():
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValidationError(f"{name} must be an integer from {lo} to {hi}, got {v!r}")
    if cfg.n_embd % cfg.n_head:
        raise ValidationError(
            f"width {cfg.n_embd} is not divisible by the number of heads {cfg.n_head}"
        )


PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(vocab_size=2048, n_embd=128, n_layer=4, n_head=4, block_size=256),
    "small": GPTConfig(vocab_size=4096, n_embd=256, n_layer=6, n_head=8, block_size=512),
    "medium": GPTConfig(vocab_size=8192, n_embd=512, n_layer=8, n_head=8, block_size=512),
    "large": GPTConfig(vocab_size=16384, n_embd=768, n_layer=12, n_head=12, block_size=1024),
}


def param_shapes(cfg: GPTConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Every parameter's name and shape, in the order they sit in the flat buffer."""
    V, D, C, F = cfg.vocab_size, cfg.n_embd, cfg.block_size, cfg.n_inner
    shapes: list[tuple[str, tuple[int, ...]]] = [("wte", (V, D)), ("wpe", (C, D))]
    for i in range(cfg.n_layer):
        h = f"h.{i}."
        shapes += [
            (h + "ln_1.weight", (D,)),
            (h + "ln_1.bias", (D,)),
            (h + "attn.c_attn.weight", (D, 3 * D)),
            (h + "attn.c_attn.bias", (3 * D,)),
            (h + "attn.c_proj.weight", (D, D)),
            (h + "attn.c_proj.bias", (D,)),
            (h + "ln_2.weight", (D,)),
            (h + "ln_2.bias", (D,)),
            (h + "mlp.c_fc.weight", (D, F)),
            (h + "mlp.c_fc.bias", (F,)),
            (h + "mlp.c_proj.weight", (F, D)),
            (h + "mlp.c_proj.bias", (D,)),
        ]
    shapes += [("ln_f.weight", (D,)), ("ln_f.bias", (D,))]
    return shapes


def num_params(cfg: GPTConfig) -> int:
    total = 0
    for _, shape in param_shapes(cfg):
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def format_count(n: int) -> str:
    """1234567 -> '1.23M'."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


@dataclass
class TrainConfig:
    """A model's saved training settings (their rules: cllm.models.rules)."""

    batch_size: int = 8
    seq_len: int = 64
    learning_rate: float = 1e-3
    min_lr: float = 1e-4  # cosine decays to this
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup: int = 100  # steps
    beta1: float = 0.9
    beta2: float = 0.99
    val_fraction: float = 0.05
    seed: int = 1337
    checkpoint_minutes: float = 5.0
    # the model-wide schedule (cllm.engine.optim.lr_at) and the run's measurements
    schedule: str = "cosine"  # cosine | linear | constant
    sampling: str = "random"  # random windows | sequential stream
    eval_interval: int = 200  # steps between validation measurements
    eval_batches: int = 8  # fixed validation batches of batch_size x seq_len
    checkpoint_interval: int = 0  # steps between kept checkpoints; 0: epoch ends, stops, timer
    keep_checkpoints: int = 3  # the last K kept beside the model (plus the best)
    early_stop: int | None = None  # stop after N evaluations without a better val loss
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
