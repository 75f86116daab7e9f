"""Per-field declarations for typed records, and JSON parsing that a hostile file cannot crash.

A record is a dataclass whose fields carry a check in their metadata::

    batch_size: int = field(default=8, metadata=check(Int(1, 1024)))

``from_fields(cls, d)`` validates a dict against those declarations (each value converted to its
proper type, or one ``ValidationError`` naming the field and what it must be), so the rules of a
new field sit next to its default, and every record is validated by the same code.

``loads(text)`` is ``json.loads`` with a nesting limit: Python's parser recurses once per level,
and a file nested 200,000 deep would raise RecursionError instead of a message. Free-form values
that a record keeps (``Plain``) are bounded to a few levels, so nothing deep reaches code that
recurses.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from dataclasses import MISSING, dataclass, fields
from typing import Any

from cllm.errors import ValidationError

MAX_DEPTH = 32  # our own JSON nests 4 deep at most


# ------------------------------------------------------------------------------ JSON with limits

def depth_of(obj: Any, limit: int = 1 << 30) -> int:
    """How deeply the lists and dicts of a parsed JSON value nest (0 for a scalar); counting
    stops once ``limit`` is passed. Iterative, so no depth can exhaust the stack."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = o.values()
        elif not isinstance(o, list):
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            break
        stack.extend((x, d + 1) for x in o if isinstance(x, (dict, list)))
    return deepest


def loads(raw: bytes | str, what: str = "JSON", max_depth: int | None = None) -> Any:
    """``json.loads`` that never raises RecursionError: Python's parser recurses once per
    level, so a text nested 200,000 deep stops at the interpreter's recursion limit, which
    becomes a ValueError naming ``what``. ``max_depth`` also refuses shallower nesting (it walks
    the parsed value, so it costs time per value: the record checks that follow a parse bound
    the depth of what they keep, so most callers leave it off)."""
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise ValueError(f"{what} nests too deeply") from None
    if max_depth is not None and depth_of(obj, max_depth) > max_depth:
        raise ValueError(f"{what} nests more than {max_depth} levels deep")
    return obj


# ------------------------------------------------------------------------------ field checks


def _shown(v: object) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class Int:
    """A whole number in [lo, hi]; a float with an integral value is accepted."""

    lo: int
    hi: int

    def __call__(self, key: str, v: object) -> int:
        if type(v) is int and self.lo <= v <= self.hi:  # the common case, without ABC checks
            return v
        if not _is_int(v):
            if _is_num(v) and math.isfinite(v) and float(v).is_integer():
                v = int(v)
            else:
                raise ValidationError(f"{key} must be a whole number, got {_shown(v)}")
        if not self.lo <= v <= self.hi:
            raise ValidationError(f"{key} must be from {self.lo} to {self.hi}, got {v}")
        return int(v)


@dataclass(frozen=True)
class Float:
    """A finite number in the interval [lo, hi] (either end open on request)."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __call__(self, key: str, v: object) -> float:
        if type(v) is float and self.lo < v < self.hi:  # the common case (NaN fails it)
            return v
        if not _is_num(v):
            raise ValidationError(f"{key} must be a number, got {_shown(v)}")
        v = float(v)
        if not math.isfinite(v):
            raise ValidationError(f"{key} must be a finite number, got {v}")
        if (
            v < self.lo
            or v > self.hi
            or (self.lo_open and v == self.lo)
            or (self.hi_open and v == self.hi)
        ):
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            raise ValidationError(
                f"{key} must be in {left}{self.lo:g}, {self.hi:g}{right}, got {v:g}"
            )
        return v


@dataclass(frozen=True)
class Str:
    max_len: int = 10_000

    def __call__(self, key: str, v: object) -> str:
        if not isinstance(v, str):
            raise ValidationError(f"{key} must be text, got {_shown(v)}")
        if len(v) > self.max_len:
            raise ValidationError(f"{key} is {len(v)} characters long; at most {self.max_len}")
        return v


@dataclass(frozen=True)
class Maybe:
    """None, or what ``inner`` accepts."""

    inner: Any

    def __call__(self, key: str, v: object) -> Any:
        return None if v is None else self.inner(key, v)


@dataclass(frozen=True)
class ListOf:
    inner: Any
    max_len: int = 1_000_000

    def __call__(self, key: str, v: object) -> list:
        if not isinstance(v, (list, tuple)):
            raise ValidationError(f"{key} must be a list, got {_shown(v)}")
        if len(v) > self.max_len:
            raise ValidationError(f"{key} has {len(v)} entries; at most {self.max_len}")
        return [self.inner(f"{key}[{i}]", x) for i, x in enumerate(v)]


@dataclass(frozen=True)
class Record:
    """A JSON object whose listed keys are checked; other keys are kept if plain JSON."""

    checks: tuple[tuple[str, Any], ...] = ()
    required: tuple[str, ...] = ()

    def __call__(self, key: str, v: object) -> dict:
        if not isinstance(v, dict):
            raise ValidationError(f"{key} must be an object, got {_shown(v)}")
        out = {}
        for k, x in v.items():
            sub = dict(self.checks).get(k)
            out[k] = sub(f"{key}.{k}", x) if sub else Plain()(f"{key}.{k}", x)
        missing = [k for k in self.required if k not in v]
        if missing:
            raise ValidationError(f"{key} has no {missing[0]!r}")
        return out


@dataclass(frozen=True)
class Plain:
    """Any JSON value (None, bool, finite number, text, list, object) nested at most
    ``max_depth`` deep."""

    max_depth: int = 8

    def __call__(self, key: str, v: object, depth: int = 0) -> Any:
        if depth > self.max_depth:
            raise ValidationError(f"{key} nests deeper than {self.max_depth} levels")
        if v is None or isinstance(v, (bool, str)):
            return v
        if _is_int(v):
            return int(v)
        if _is_num(v):
            if not math.isfinite(v):
                raise ValidationError(f"{key} must be a finite number, got {v}")
            return float(v)
        if isinstance(v, (list, tuple)):
            return [self(f"{key}[{i}]", x, depth + 1) for i, x in enumerate(v)]
        if isinstance(v, dict):
            return {str(k): self(f"{key}.{k}", x, depth + 1) for k, x in v.items()}
        raise ValidationError(f"{key} must be plain JSON, got {type(v).__name__}")


def check(c) -> dict:
    """Field metadata declaring the check of a record's field."""
    return {"check": c}


def field_check(f) -> Any:
    return f.metadata.get("check")


@functools.cache
def _declared(cls) -> dict:
    return {f.name: field_check(f) for f in fields(cls)}


def validate_fields(cls, d: dict, *, unknown: str = "refuse", what: str = "setting") -> dict:
    """Check the keys of ``d`` that are fields of ``cls`` with their declared checks; unknown
    keys are refused (``unknown="refuse"``), dropped (``"drop"``) or returned under ``"keep"``
    unchanged (the caller decides what to do with them)."""
    declared = _declared(cls)
    out: dict = {}
    for key, value in d.items():
        c = declared.get(key)
        if c is None:
            if key in declared or unknown == "keep":
                out[key] = value
            elif unknown == "refuse":
                raise ValidationError(f"unknown {what} {key!r}")
            continue
        out[key] = c(key, value)
    return out


def defaults(cls) -> dict:
    """Each field's default value (factories called)."""
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out
