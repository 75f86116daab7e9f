"""Chat: the turn format, the context window, stop sequences, the repetition penalty, presets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cllm.engine.chat import (
    ASSISTANT,
    PRESETS,
    Sampling,
    StopScanner,
    build_context,
    chat,
    complete,
    format_turn,
)
from cllm.engine.config import GPTConfig
from cllm.engine.generate import penalize_repeats, sample_stream
from cllm.engine.model import GPT
from cllm.engine.tokenizer import ByteTokenizer
from cllm.errors import ValidationError

TOK = ByteTokenizer()


def gpt(block_size=64, seed=0):
    cfg = GPTConfig(vocab_size=257, n_embd=32, n_layer=1, n_head=2, block_size=block_size)
    return GPT(cfg, seed=seed)


def test_turn_format_and_context():
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    ctx = build_context(TOK, msgs, 256, 10)
    assert ctx.prompt == "Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
    assert TOK.decode(ctx.ids) == ctx.prompt
    assert (ctx.kept, ctx.dropped, ctx.truncated) == (3, 0, False)
    assert format_turn("user", "a\nb") == "User: a\nb\n"
    with pytest.raises(ValidationError, match="role"):
        build_context(TOK, [{"role": "bot", "content": "x"}], 256, 0)
    with pytest.raises(ValidationError, match="non-empty"):
        build_context(TOK, [], 256, 0)


def test_oldest_turns_are_dropped_when_the_window_is_full():
    turns = [{"role": "system", "content": "S"}]
    for i in range(10):
        turns.append({"role": "user", "content": f"question {i}"})
        turns.append({"role": "model", "content": f"answer {i}"})  # the studio's role name
    turns.append({"role": "user", "content": "last"})
    ctx = build_context(TOK, turns, 128, 32)  # 96 tokens: the system line and a few turns
    assert len(ctx.ids) <= 96
    assert ctx.prompt.startswith("S\n") and ctx.prompt.endswith("User: last\nAssistant:")
    assert ctx.dropped > 0 and ctx.kept + ctx.dropped == 21
    kept = ctx.prompt[2:]
    # exactly the newest turns: one more would not have fitted
    newest_dropped = turns[ctx.dropped]  # turns[0] is the system message
    one_more = format_turn(
        newest_dropped["role"].replace("model", "assistant"), newest_dropped["content"]
    )
    assert len(TOK.encode("S\n" + one_more + kept)) > 96
    assert "question 9" in kept and "question 0" not in kept

    long = [{"role": "user", "content": "y" * 500}]
    ctx = build_context(TOK, long, 128, 0)
    assert ctx.truncated and len(ctx.ids) == 128 and ctx.prompt.endswith("y\nAssistant:")


PIECES = st.lists(st.text("ab\nU:s", max_size=4), max_size=12)
STOPS = st.lists(st.text("ab\nU:s", min_size=1, max_size=4), max_size=3)


@given(pieces=PIECES, stops=STOPS)
def test_stop_scanner_shows_exactly_the_text_before_the_first_stop(pieces, stops):
    scan = StopScanner(stops)
    shown = []
    for p in pieces:
        shown.append(scan.feed(p))
        # nothing shown so far ends inside a possible stop that has not been ruled out
        assert not any(s in "".join(shown) for s in stops)
    shown.append(scan.finish())
    full = "".join(pieces)
    cut = min((i for i in (full.find(s) for s in stops) if i >= 0), default=len(full))
    assert "".join(shown) == scan.text == full[:cut]
    assert scan.stopped == (cut < len(full))


def test_generation_stops_at_a_stop_sequence_and_streams_the_same_text():
    g = gpt()
    base = Sampling(max_tokens=40, temperature=0.0)
    free = complete(g, TOK, "The ", base)
    text = free.run()
    assert free.finish_reason == "length" and free.completion_tokens == 40
    assert len(text) > 6
    stop = text[5:8]
    cut = text.find(stop)
    gen = complete(g, TOK, "The ", Sampling(max_tokens=40, temperature=0.0, stop=(stop,)))
    pieces = list(gen)
    assert "".join(pieces) == gen.text == text[:cut]
    assert gen.finish_reason == "stop" and gen.completion_tokens < 40


def test_chat_reply_is_seeded_and_ends_at_the_next_user_turn():
    g = gpt(block_size=128, seed=3)
    msgs = [{"role": "user", "content": "Hello there"}]
    s = Sampling(max_tokens=30, temperature=1.0, top_k=0, top_p=1.0, seed=7)
    ctx, a = chat(g, TOK, msgs, s)
    _, b = chat(g, TOK, msgs, s)
    assert a.run() == b.run() and ctx.prompt.endswith(ASSISTANT)
    assert "\nUser:" not in a.text and not a.text.startswith(" ")
    assert a.prompt_tokens == len(ctx.ids)


def test_repetition_penalty():
    logits = np.array([2.0, -1.0, 0.5, 3.0], np.float32)
    out = penalize_repeats(logits, [0, 1, 1], 2.0)
    assert np.allclose(out, [1.0, -2.0, 0.5, 3.0]) and logits[0] == 2.0
    # greedy decoding with a strong penalty never repeats a token of its context while it can
    g = gpt(block_size=64, seed=1)
    ids = list(sample_stream(g, [65], 20, temperature=0, repetition_penalty=1e9, seed=0))
    plain = list(sample_stream(g, [65], 20, temperature=0, seed=0))
    assert len(set(ids + [65])) == len(ids) + 1
    assert len(set(plain)) < len(plain)  # a random model repeats itself without it


def test_sampling_checks_and_presets():
    assert Sampling().with_preset("Precise").temperature == PRESETS["precise"]["temperature"]
    for bad, msg in [
        (dict(max_tokens=0), "max tokens"),
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0), "top-p"),
        (dict(repetition_penalty=0), "repetition"),
        (dict(seed=-1), "seed"),
        (dict(stop=("",)), "stop"),
        (dict(stop=("a",) * 9), "stop"),
    ]:
        with pytest.raises(ValidationError, match=msg):
            Sampling(**bad).check()
    with pytest.raises(ValidationError, match="preset"):
        Sampling().with_preset("wild")
