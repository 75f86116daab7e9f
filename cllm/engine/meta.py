"""A model's metadata as a typed record, and the checks of the saved training state.

``ModelMeta`` is what a model file says about its model besides the weights: its name, how far
training got, its losses, where its data came from. Every field declares its type and range
(cllm.engine.schema); ``ModelMeta.from_dict`` checks a file's metadata once, when it is read,
so everything downstream (listing, training, the app) reads attributes that are known to be sound.
Keys this version does not know are kept in ``extra`` and written back, so a newer version's
metadata survives a save by this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone

import numpy as np

from cllm.engine.schema import (
    Float,
    Int,
    ListOf,
    Maybe,
    Plain,
    Record,
    Str,
    check,
    defaults,
    validate_fields,
)
from cllm.errors import ValidationError

MAX_EPOCHS = 1_000_000
_COUNT = Int(0, 2**62)
_LOSS = Maybe(Float(-1e9, 1e9))
_STAMP = Str(100)
_SUMMARY = Record(
    (
        ("epoch", Int(0, MAX_EPOCHS)),
        ("steps", _COUNT),
        ("tokens", _COUNT),
        ("train_loss", _LOSS),
        ("val_loss", _LOSS),
        ("finished", _STAMP),
    )
)
_POSITION = Maybe(
    Record((("epoch", Int(0, MAX_EPOCHS + 1)), ("batch", _COUNT), ("offset", _COUNT)))
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelMeta:
    """What a model file records about its model (besides weights, settings and history)."""

    name: str = field(default="", metadata=check(Str(1000)))
    epochs_trained: int = field(default=0, metadata=check(Int(0, MAX_EPOCHS)))
    target_epochs: int = field(default=1, metadata=check(Int(0, MAX_EPOCHS)))
    steps: int = field(default=0, metadata=check(_COUNT))
    tokens_seen: int = field(default=0, metadata=check(_COUNT))
    created: str = field(default="", metadata=check(_STAMP))
    modified: str = field(default="", metadata=check(_STAMP))
    last_loss: float | None = field(default=None, metadata=check(_LOSS))
    best_loss: float | None = field(default=None, metadata=check(_LOSS))
    last_val_loss: float | None = field(default=None, metadata=check(_LOSS))
    sources: list[str] = field(default_factory=list, metadata=check(ListOf(Str(), 100_000)))
    epoch_summaries: list[dict] = field(
        default_factory=list, metadata=check(ListOf(_SUMMARY, MAX_EPOCHS))
    )
    position: dict | None = field(default=None, metadata=check(_POSITION))  # where training stopped
    copied_from: str | None = field(default=None, metadata=check(Maybe(Str(1000))))
    imported_from: str | None = field(default=None, metadata=check(Maybe(Str(10_000))))
    lineage: list[dict] = field(default_factory=list, metadata=check(ListOf(Plain(4), 10_000)))
    extra: dict = field(default_factory=dict)  # keys of newer versions, kept as they are

    @classmethod
    def new(cls, name: str) -> ModelMeta:
        stamp = now_iso()
        return cls(name=name, created=stamp, modified=stamp)

    @classmethod
    def from_dict(cls, d: object) -> ModelMeta:
        """The metadata of a file, every field checked (ValidationError names the first bad
        one); unknown keys go to ``extra``."""
        if not isinstance(d, dict):
            raise ValidationError(f"metadata must be an object, got {type(d).__name__}")
        vals = validate_fields(cls, {k: v for k, v in d.items() if k != "extra"}, unknown="keep")
        known = _META_FIELDS
        extra = {k: v for k, v in vals.items() if k not in known}
        if extra:
            extra = Plain()("metadata", extra)
        return cls(**{k: v for k, v in vals.items() if k in known}, extra=extra)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (unknown keys of ``extra`` at the top level, as they were)."""
        out = {**self.extra}
        for f in fields(self):
            if f.name != "extra":
                v = getattr(self, f.name)
                out[f.name] = list(v) if isinstance(v, list) else v
        return out

    def update(self, **values) -> None:
        """Set fields, each checked by its declaration (an unknown name is refused)."""
        for key, v in validate_fields(type(self), _plain(values), what="metadata field").items():
            setattr(self, key, v)

    def copy(self) -> ModelMeta:
        return ModelMeta.from_dict(self.to_dict())


def _plain(d: dict) -> dict:
    """NumPy scalars (a trainer's losses) become Python numbers; NaN and inf become None."""
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            v = None
        out[k] = v
    return out


_META_FIELDS = frozenset(f.name for f in fields(ModelMeta))
assert set(defaults(ModelMeta)) == {f.name for f in fields(ModelMeta)}  # every field has a default


# ------------------------------------------------------------------------------ training state

_RNG = Maybe(
    Record(
        (
            ("bit_generator", Str(100)),
            ("state", Record((("state", Int(0, 2**128)), ("inc", Int(0, 2**128))), ("state",))),
            ("has_uint32", Int(0, 1)),
            ("uinteger", Int(0, 2**32 - 1)),
        ),
        ("bit_generator", "state"),
    )
)
_SEGMENT = ListOf(Int(-(2**62), 2**62), 3)
_TRAIN_POSITION = Maybe(
    Record(
        (
            ("items", ListOf(_SEGMENT, 10_000_000)),
            ("offset", _COUNT),
            ("batch", _COUNT),
            ("loss_sum", Float(-1e30, 1e30)),
        ),
        ("items", "offset", "batch"),
    )
)
_RUN = Maybe(Record((("start", _COUNT), ("end", _COUNT)), ("start", "end")))
TRAIN_STATE_CHECKS = {"rng": _RNG, "position": _TRAIN_POSITION, "run": _RUN}


def validate_train_state(state: object) -> dict:
    """The trainer's saved state (``state.train``): a JSON object whose known keys (rng,
    position, run) have the shapes the trainer reads; other keys are kept as plain JSON."""
    out = Record(tuple(TRAIN_STATE_CHECKS.items()))("state.train", state)
    rng = out.get("rng")
    if rng is not None:
        try:
            g = np.random.default_rng()
            g.bit_generator.state = rng
        except (TypeError, ValueError, KeyError, OverflowError) as err:
            raise ValidationError(f"state.train.rng is not a generator state ({err})") from None
    for seg in (out.get("position") or {}).get("items", []):
        if len(seg) != 3 or not 0 <= seg[1] <= seg[2]:
            raise ValidationError(f"state.train.position.items holds a bad segment {seg}")
    run = out.get("run")
    if run and run["end"] < run["start"]:
        raise ValidationError("state.train.run ends before it starts")
    return out
