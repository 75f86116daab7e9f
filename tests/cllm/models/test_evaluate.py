"""Scoring models on a shared text, against a direct log-softmax of the logits; clearing a
model's history through the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cllm.cli import main
from cllm.engine.config import GPTConfig
from cllm.errors import ValidationError
from cllm.models.evaluate import evaluate
from cllm.models.registry import Registry

CFG = GPTConfig(vocab_size=257, n_embd=16, n_layer=1, n_head=2, block_size=16)
TEXT = "A lattice of crystals, grown slowly in the dark. " * 3


@pytest.fixture
def reg(tmp_path):
    r = Registry(tmp_path / "models")
    r.create("m", config=CFG, tokenizer="byte", text="x")
    return r


def reference(lm, text: str) -> tuple[float, int]:
    """Mean -log p(next) over every token after the first, each predicted from the tokens before
    it in its window of the context length (windows overlap by one token)."""
    ids = np.asarray(lm.tokenizer.encode(text))
    T, total, n = lm.config.block_size, 0.0, 0
    for s in range(0, len(ids) - 1, T):
        w = ids[s : s + T + 1]
        logits = lm.gpt.forward(w[None, :-1]).astype(np.float64)[0]
        logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))[:, None]
        logp -= logits.max(1, keepdims=True)
        total -= sum(logp[i, w[i + 1]] for i in range(len(w) - 1))
        n += len(w) - 1
    return total / n, n


def test_loss_matches_a_direct_computation(reg):
    lm = reg.load("m")
    got = evaluate(lm, TEXT)
    want, n = reference(lm, TEXT)
    assert got.tokens == n == len(TEXT.encode()) - 1
    assert got.loss == pytest.approx(want, rel=1e-4)
    assert got.perplexity == pytest.approx(math.exp(want), rel=1e-3)
    assert got.bits_per_byte == pytest.approx(want * n / math.log(2) / len(TEXT.encode()), rel=1e-4)
    # an untrained byte model is near uniform over its 257 tokens
    assert abs(got.loss - math.log(257)) < 0.5


def test_too_short_a_text_is_refused(reg):
    with pytest.raises(ValidationError, match="too short"):
        evaluate(reg.load("m"), "a")


def test_cli_eval_and_history_clear(reg, tmp_path, capsys):
    mdir = str(reg.dir)
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    reg.copy("m", "n")
    assert (
        main(["models", "eval", "m", "n", "--text", str(text), "--json", "--models-dir", mdir]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["m", "n"] and rows[0]["loss"] == rows[1]["loss"]
    lm = reg.load("m")
    lm.history = {"steps": [1, 2], "train": [5.0, 4.0], "val": [float("nan"), 4.5]}
    lm.meta.epochs_trained = 2
    reg.save(lm)
    before = reg.load("m").gpt.params.copy()
    assert main(["models", "history", "m", "--clear", "--models-dir", mdir]) == 2  # no --yes
    assert reg.history("m")["steps"] == [1, 2]
    assert main(["models", "history", "m", "--clear", "--yes", "--models-dir", mdir]) == 0
    h = reg.history("m")
    assert h["steps"] == [] and h["train_loss"] == [] and h["epochs"] == []
    after = reg.load("m")
    assert np.array_equal(after.gpt.params, before) and after.meta.epochs_trained == 2
