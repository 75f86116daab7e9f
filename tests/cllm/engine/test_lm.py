import threading

import numpy as np
import pytest

import cllm
from cllm.engine.config import GPTConfig, TrainConfig
from cllm.engine.lm import LanguageModel, load_model
from cllm.engine.tokenizer import train_tokenizer
from cllm.errors import ModelFileError, ValidationError

TEXT = "to be or not to be, that is the question. ça va? 日本\n" * 30


def make(kind="char", layers=2, seed=0):
    tok = train_tokenizer(kind, TEXT, 400)
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_embd=32, n_layer=layers, n_head=4, block_size=48)
    return LanguageModel.create(cfg, tok, "m", seed=seed, train=TrainConfig(batch_size=2))


@pytest.fixture(scope="module")
def lm():
    return make()


def test_public_api():
    assert cllm.load_model is load_model
    assert cllm.LanguageModel is LanguageModel


def test_logits_shapes_and_batch_consistency(lm):
    ids = lm.tokenizer.encode("to be or not")
    one = lm.logits(ids)
    assert one.shape == (len(ids), lm.config.vocab_size) and one.dtype == np.float32
    batch = lm.logits(np.stack([ids, ids[::-1]]))
    assert batch.shape == (2, len(ids), lm.config.vocab_size)
    np.testing.assert_allclose(batch[0], one, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch[1], lm.logits(ids[::-1]), rtol=1e-5, atol=1e-5)
    assert np.array_equal(lm.logits(list(ids)), one)  # a plain list works too


@pytest.mark.parametrize(
    "bad",
    [
        np.array([], np.int32),
        np.zeros((2, 0), np.int32),
        np.zeros((0, 3), np.int32),
        np.array([0, 1, 10_000]),
        np.array([-1, 2]),
        np.zeros(49, np.int32),  # longer than the context of 48
        np.zeros((1, 2, 3), np.int32),
        np.array([0.5, 1.0]),
    ],
)
def test_logits_refusals(lm, bad):
    with pytest.raises(ValidationError):
        lm.logits(bad)


def test_create_refuses_vocab_mismatch():
    tok = train_tokenizer("byte", "", 257)
    with pytest.raises(ValidationError, match="vocabulary"):
        LanguageModel.create(GPTConfig(vocab_size=300, n_embd=8, n_layer=1, n_head=1), tok, "x")


def test_greedy_generation_matches_full_forward(lm):
    # the KV-cache stream must pick what a full forward pass picks, token by token
    prompt = "to be"
    ids = list(lm.tokenizer.encode(prompt))
    new = []
    for _ in range(20):
        nxt = int(np.argmax(lm.logits(np.array(ids))[-1]))
        if nxt == lm.tokenizer.eot_id:
            break
        ids.append(nxt)
        new.append(nxt)
    text = "".join(lm.generate(prompt, max_tokens=20, temperature=0))
    assert text == lm.tokenizer.decode(new)


def test_generation_seeded_and_bounded(lm):
    a = "".join(lm.generate("to", max_tokens=30, temperature=1.0, seed=7))
    b = "".join(lm.generate("to", max_tokens=30, temperature=1.0, seed=7))
    assert a == b
    pieces = list(lm.generate("", max_tokens=5, temperature=1.0, top_k=0, top_p=1.0, seed=1))
    assert all(isinstance(p, str) and p for p in pieces)
    assert len(lm.tokenizer.encode("".join(pieces))) <= 5 * 4  # 5 tokens, a few bytes at most


def test_generation_past_the_context(lm):
    text = "".join(lm.generate("to be", max_tokens=120, temperature=1.0, seed=3))
    assert isinstance(text, str)


def test_generation_stops_on_event(lm):
    stop = threading.Event()
    stop.set()
    assert list(lm.generate("to be", max_tokens=50, stop=stop)) == []
    stop.clear()
    out = []
    for piece in lm.generate("to be", max_tokens=1000, temperature=1.0, seed=0, stop=stop):
        out.append(piece)
        stop.set()
    assert len(out) == 1


@pytest.mark.parametrize(
    "kw",
    [
        {"max_tokens": 0},
        {"max_tokens": 2.5},
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"seed": -3},
    ],
)
def test_generation_refusals(lm, kw):
    with pytest.raises(ValidationError):
        list(lm.generate("to be", **kw))


def test_save_load_roundtrip(tmp_path):
    lm = make(kind="bpe", seed=3)
    lm.meta.update(epochs_trained=2, target_epochs=5, steps=40, sources=["a.txt"])
    lm.optim_state = {"m": lm.gpt.params * 0.1, "v": lm.gpt.params**2, "t": 40}
    lm.train_state = {
        "position": {"items": [[1, 0, 50]], "offset": 3, "batch": 2, "loss_sum": 4.5},
        "rng": np.random.default_rng(7).bit_generator.state,
        "run": {"start": 0, "end": 40},
    }
    lm.history = {
        "steps": np.arange(3),
        "train": np.array([3.0, 2.5, 2.0]),
        "val": np.array([np.nan, np.nan, 2.2]),
    }
    path = tmp_path / "m.cllm"
    lm.save(path)
    lm2 = load_model(path)
    ids = lm.tokenizer.encode("to be or not to be")
    assert np.array_equal(lm2.logits(ids), lm.logits(ids))
    assert np.array_equal(lm2.gpt.params, lm.gpt.params)
    assert lm2.name == "m" and lm2.config == lm.config
    assert lm2.meta.epochs_trained == 2 and lm2.meta.sources == ["a.txt"]
    assert lm2.train_config == lm.train_config
    assert lm2.optim_state["t"] == 40
    assert np.array_equal(lm2.optim_state["v"], lm.optim_state["v"])
    assert lm2.train_state == lm.train_state
    assert lm2.history["train"].tolist() == [3.0, 2.5, 2.0]
    assert lm2.tokenizer.encode(TEXT).tolist() == lm.tokenizer.encode(TEXT).tolist()


def test_grown_model_saves_and_loads(tmp_path):
    lm = make(layers=1)
    ids = lm.tokenizer.encode("not to be")
    before = lm.logits(ids)
    lm.gpt.grow_layers(3)
    assert lm.config.n_layer == 3
    lm.save(tmp_path / "g.cllm")
    lm2 = load_model(tmp_path / "g.cllm")
    assert lm2.config.n_layer == 3
    np.testing.assert_allclose(lm2.logits(ids), before, atol=1e-6)


def test_load_refuses_broken_files(tmp_path):
    bad = tmp_path / "bad.cllm"
    bad.write_bytes(b"\x10" + b"\0" * 7 + b"{}")
    with pytest.raises(ModelFileError, match="bad.cllm"):
        load_model(bad)
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "missing.cllm")
