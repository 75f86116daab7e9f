from __future__ import annotations

import time

import pytest

from cllm.engine.config import GPTConfig
from cllm.models.registry import Registry

SMALL = GPTConfig(vocab_size=257, n_embd=32, n_layer=1, n_head=2, block_size=64)
TEXT = (
    "the cat sat on the mat. the dog sat on the log. a bird in the hand is worth two in the "
    "bush. to be or not to be, that is the question. "
) * 60


def make_models(models_dir, names=("m",), config=SMALL, **train) -> Registry:
    reg = Registry(models_dir)
    settings = {"batch_size": 4, "seq_len": 32, "learning_rate": 3e-3, "warmup": 2}
    settings.update(train)
    first = None
    for name in names:
        if first is None:
            reg.create(name, config=config, tokenizer="byte", text=TEXT, train=settings)
            dq = reg.queue(name)
            dq.add_text(TEXT, source="text")
            dq.close()
            first = name
        else:
            reg.copy(first, name)
    return reg


@pytest.fixture
def models(tmp_path):
    return tmp_path / "models"


def wait_for(cond, timeout=60.0, period=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(period)
    raise AssertionError("timed out waiting")
