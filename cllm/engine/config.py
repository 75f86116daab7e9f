"""Architecture and training settings, the presets, and the flat parameter layout.

Parameter names follow GPT-2 (and Hugging Face's ``GPT2Model`` without its ``transformer.``
prefix), and every matrix is stored ``[in, out]`` as GPT-2's Conv1D stores it, so weights map one
to one onto other implementations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from cllm.engine.schema import Float, Int, Plain, check, validate_fields
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
        """An architecture read back: each known key checked against LIMITS (unknown keys are
        ignored); ValidationError naming the field otherwise."""
        if not isinstance(d, dict):
            raise ValidationError(f"architecture must be an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        vals = {}
        for k, v in d.items():
            if k in known:
                lo, hi = LIMITS[k]
                vals[k] = Int(0 if k == "n_inner" else lo, hi)(k, v)
        return cls(**vals)

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
    """A model's saved training settings. Each field declares its rule next to its default
    (``check(...)``): ``validate_train_settings`` checks user input and the model file's saved
    settings with them, so a new setting is one line here."""

    batch_size: int = field(default=8, metadata=check(Int(1, 1024)))
    seq_len: int = field(default=64, metadata=check(Int(1, 1 << 16)))  # and <= the context
    learning_rate: float = field(default=1e-3, metadata=check(Float(0.0, 1.0, lo_open=True)))
    min_lr: float = field(default=1e-4, metadata=check(Float(0.0, 1.0)))  # cosine decays to this
    weight_decay: float = field(default=0.1, metadata=check(Float(0.0, 10.0)))
    grad_clip: float = field(default=1.0, metadata=check(Float(0.0, 1e6, lo_open=True)))
    warmup: int = field(default=100, metadata=check(Int(0, 10_000_000)))  # steps
    beta1: float = field(default=0.9, metadata=check(Float(0.0, 1.0, hi_open=True)))
    beta2: float = field(default=0.99, metadata=check(Float(0.0, 1.0, hi_open=True)))
    val_fraction: float = field(default=0.05, metadata=check(Float(0.0, 0.5)))
    seed: int = field(default=1337, metadata=check(Int(0, 2**32 - 1)))
    checkpoint_minutes: float = field(
        default=5.0, metadata=check(Float(0.0, 24 * 60.0, lo_open=True))
    )
    extra: dict = field(default_factory=dict, metadata=check(Plain()))  # settings of newer versions

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, config: GPTConfig | None = None) -> TrainConfig:
        """Settings read back (from a model file): every field validated; unknown keys are
        kept in ``extra`` so a newer version's settings survive a save by this one."""
        if not isinstance(d, dict):
            raise ValidationError(f"training settings must be an object, got {type(d).__name__}")
        known = _TRAIN_FIELDS
        extra = d.get("extra") or {}
        if not isinstance(extra, dict):
            raise ValidationError(f"extra must be an object, got {type(extra).__name__}")
        settings = {k: v for k, v in d.items() if k in known and k != "extra"}
        unknown = {k: v for k, v in d.items() if k not in known}
        vals = validate_train_settings(settings, config)
        if unknown:
            extra = {**extra, **unknown}
        vals["extra"] = Plain()("extra", extra)
        return cls(**vals)


_TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))


def validate_train_settings(settings: dict, config: GPTConfig | None = None) -> dict:
    """Check training settings against TrainConfig's declarations; return them converted to
    their proper types. Unknown keys are refused so that a typo never silently does nothing.
    ``config`` (the model's architecture) bounds ``seq_len`` by the context length."""
    context = config.block_size if config is not None else 1 << 16
    seq = settings.get("seq_len")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq > context:
        raise ValidationError(
            f"seq_len {seq} is longer than the model's context of {context} tokens"
        )
    if "extra" in settings:
        raise ValidationError("unknown training setting 'extra'")
    out = validate_fields(TrainConfig, settings, what="training setting")
    if out.get("seq_len", 0) > context:
        raise ValidationError(
            f"seq_len {out['seq_len']} is longer than the model's context of {context} tokens"
        )
    lr, min_lr = out.get("learning_rate"), out.get("min_lr")
    if lr is not None and min_lr is not None and min_lr > lr:
        raise ValidationError(f"min_lr {min_lr:g} is above learning_rate {lr:g}")
    return out
