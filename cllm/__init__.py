"""Crystalline CLLM: GPT-2 language models in NumPy and numba, and the training system around them."""

from .config import PRESETS, GPTConfig, TrainConfig, num_params
from .errors import (
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
]
__version__ = "0.1.0"
