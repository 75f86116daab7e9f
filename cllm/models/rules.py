"""Every rule of the models folder in one place (docs/models-folder.md).

Each refusal is a ``ValidationError`` whose one-line message says which rule failed, so the command
line, the app and the trainer all refuse the same inputs with the same words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cllm.engine.config import GPTConfig
from cllm.engine.config import validate_train_settings as _validate_train_settings
from cllm.engine.meta import MAX_EPOCHS
from cllm.engine.schema import Int
from cllm.errors import AlreadyExistsError, ValidationError

NAME_MAX = 64
# ASCII only: the name becomes a file name, and only ASCII is safe on every OS and file system.
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
# Device names Windows reserves whatever the case (and whatever the extension, but names have none).
RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)
MAX_LAYERS = 256


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid model name, else raise saying which rule it breaks."""
    if not isinstance(name, str):
        raise ValidationError(f"model name must be text, got {type(name).__name__}")
    if not name:
        raise ValidationError("model name is empty: use 1-64 letters, digits, '_' or '-'")
    shown = name if len(name) <= 40 else name[:37] + "..."
    if len(name) > NAME_MAX:
        raise ValidationError(f"model name {shown!r} is {len(name)} characters long; at most 64")
    if not _NAME_RE.fullmatch(name):
        bad = next(c for c in name if not _NAME_RE.fullmatch(c))
        raise ValidationError(
            f"model name {shown!r} contains {bad!r}: only ASCII letters, digits, '_' and '-' "
            "are allowed (the name is a file name on every OS)"
        )
    if name.startswith("-"):
        raise ValidationError(f"model name {name!r} starts with '-' (it would read as an option)")
    if name.upper() in RESERVED:
        raise ValidationError(f"model name {name!r} is a device name reserved by Windows")
    return name


class NameTakenError(AlreadyExistsError, ValidationError):
    """The name is valid but taken; both kinds of caller can catch it."""


def check_unique(name: str, existing: Iterable[str]) -> None:
    """Names are unique regardless of case, so a folder stays valid on a case-insensitive disk."""
    low = name.lower()
    for other in existing:
        if other.lower() == low:
            same = "" if other == name else f" (as {other!r}; names are compared ignoring case)"
            raise NameTakenError(f"a model named {name!r} already exists{same}")


def default_name(existing: Iterable[str], base: str = "model") -> str:
    """The first free ``model_N`` (N from 1), compared ignoring case."""
    taken = {n.lower() for n in existing}
    i = 1
    while f"{base}_{i}".lower() in taken:
        i += 1
    return f"{base}_{i}"


def free_variant(name: str, existing: Iterable[str]) -> str:
    """``name`` if free, else the first free ``name_2``, ``name_3``, ... (kept within 64 chars)."""
    taken = {n.lower() for n in existing}
    if name.lower() not in taken:
        return name
    i = 2
    while True:
        suffix = f"_{i}"
        cand = name[: NAME_MAX - len(suffix)] + suffix
        if cand.lower() not in taken:
            return cand
        i += 1


def _int(key: str, value: object, lo: int, hi: int) -> int:
    return Int(lo, hi)(key, value)  # bool is an int to Python but never a count to a person


def check_target_epochs(target: object, trained: int) -> int:
    """``target_epochs`` is the total to reach; below what is already trained is refused."""
    target = _int("target_epochs", target, 0, MAX_EPOCHS)
    if target < trained:
        raise ValidationError(
            f"target_epochs {target} is below the {trained} epochs already trained "
            "(prevent reducing epochs)"
        )
    return target


def check_layers(new: object, current: int) -> int:
    """Layers can be added, never removed (the trained blocks would be thrown away)."""
    new = _int("layers", new, 1, MAX_LAYERS)
    if new < current:
        raise ValidationError(
            f"cannot reduce layers from {current} to {new}: a model's layer count never goes down"
        )
    return new


def validate_train_settings(settings: dict, config: GPTConfig | None = None) -> dict:
    """Check training settings; return them converted to their proper types (the rule of each
    setting is declared on its TrainConfig field). Unknown keys are refused so that a typo never
    silently does nothing; ``config`` bounds ``seq_len`` by the context length."""
    return _validate_train_settings(settings, config)
