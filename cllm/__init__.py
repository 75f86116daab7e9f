"""Crystalline CLLM: GPT-2 language models in NumPy and numba, and the training system for them."""

from cllm.engine.config import PRESETS, GPTConfig, TrainConfig, num_params
from cllm.engine.tokenizer import StreamDecoder, Tokenizer, tokenizer_from_json, train_tokenizer
from cllm.errors import (
    AlreadyExistsError,
    BusyError,
    CLLMError,
    ModelFileError,
    NotFoundError,
    ValidationError,
)

__all__ = [
    "PRESETS",
    "GPTConfig",
    "TrainConfig",
    "num_params",
    "CLLMError",
    "ValidationError",
    "NotFoundError",
    "AlreadyExistsError",
    "BusyError",
    "ModelFileError",
    "Tokenizer",
    "StreamDecoder",
    "train_tokenizer",
    "tokenizer_from_json",
    "LanguageModel",
    "load_model",
    "Registry",
]


def __getattr__(name: str):
    # the model pulls in numba: import it on first use, so `import cllm` (and every CLI
    # command that does not touch weights) stays fast
    if name in ("LanguageModel", "load_model"):
        from cllm.engine import lm

        return getattr(lm, name)
    if name == "Registry":
        from cllm.models.registry import Registry

        return Registry
    raise AttributeError(f"module 'cllm' has no attribute {name!r}")


__version__ = "0.1.0"
