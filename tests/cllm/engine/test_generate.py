import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.engine.config import GPTConfig
from cllm.engine.generate import sample_next, sample_stream
from cllm.engine.model import GPT
from cllm.errors import ValidationError

CFG = GPTConfig(vocab_size=29, n_embd=16, n_layer=2, n_head=2, block_size=16)


@pytest.fixture(scope="module")
def gpt():
    g = GPT(CFG, seed=0)
    g.params *= 20  # sharper distributions than a fresh init, so sampling choices matter
    return g


def test_greedy_is_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=50)
    assert sample_next(logits, 0.0, 50, 0.9, rng) == int(np.argmax(logits))


def test_top_k_and_top_p_restrict_support():
    rng = np.random.default_rng(0)
    logits = np.linspace(0, 3, 40)  # token 39 most likely, then 38, ...
    seen = {sample_next(logits, 1.0, 3, 1.0, rng) for _ in range(500)}
    assert seen == {37, 38, 39}
    # nucleus: the smallest set of most likely tokens whose mass reaches top_p
    probs = np.log(np.array([0.1, 0.4, 0.2, 0.3]))
    assert {sample_next(probs, 1.0, 0, 0.6, rng) for _ in range(300)} == {1, 3}
    assert {sample_next(probs, 1.0, 0, 0.75, rng) for _ in range(300)} == {1, 2, 3}
    assert {sample_next(probs, 1.0, 2, 0.99, rng) for _ in range(300)} == {1, 3}
    assert {sample_next(logits, 1.0, 0, 1e-9, rng) for _ in range(50)} == {39}
    assert {sample_next(logits, 1.0, 1, 1.0, rng) for _ in range(50)} == {39}


def test_the_penalty_inside_sampling_is_penalize_repeats():
    """sample_next(..., context, penalty) draws as sample_next does from penalize_repeats' logits,
    token for token with the same draws, on every path (greedy, top-k, nucleus, the whole)."""
    from cllm.engine.generate import penalize_repeats

    z = np.random.default_rng(3).standard_normal(300).astype(np.float32) * 2
    ctx = [5, 7, 7, 250, 299, int(np.argmax(z))]
    for temperature, top_k, top_p in [(0, 0, 1.0), (0.8, 40, 0.9), (1.1, 0, 0.97), (1.0, 0, 1.0)]:
        a, b = np.random.default_rng(9), np.random.default_rng(9)
        got = [sample_next(z, temperature, top_k, top_p, a, ctx, 1.3) for _ in range(200)]
        pen = penalize_repeats(z, ctx, 1.3)
        want = [sample_next(pen, temperature, top_k, top_p, b) for _ in range(200)]
        assert got == want
    assert sample_next(z, 0, 0, 1.0, a, ctx, 1e9) != int(np.argmax(z))  # greedy avoids it


def test_ties_rank_by_id_and_dead_tokens_are_never_drawn():
    rng = np.random.default_rng(0)
    z = np.array([1.0, 2.0, 2.0, 2.0, 0.0], np.float32)
    assert {sample_next(z, 1.0, 2, 1.0, rng) for _ in range(300)} == {1, 2}  # the first two ties
    assert sample_next(z, 0.0, 0, 1.0, rng) == 1
    z = np.full(3000, -np.inf, np.float32)
    z[[17, 2900]] = 0.0
    for top_k, top_p in [(0, 1.0), (0, 0.5), (5, 1.0), (5, 0.3)]:
        assert {sample_next(z, 0.7, top_k, top_p, rng) for _ in range(200)} <= {17, 2900}
    assert sample_next(np.full(4, -np.inf, np.float32), 1.0, 0, 1.0, rng) == 0  # nothing alive


def test_sampling_follows_the_distribution():
    rng = np.random.default_rng(1)
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    counts = np.bincount([sample_next(logits, 1.0, 0, 1.0, rng) for _ in range(4000)], minlength=3)
    np.testing.assert_allclose(counts / 4000, [0.5, 0.3, 0.2], atol=0.03)


def _reference(z, temperature, top_p, u):
    """sample_next's nucleus as it reads: sort all tokens, most likely first (ties by id)."""
    z = np.asarray(z, np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    p = np.exp(z[order] - z[order[0]])
    cum = np.cumsum(p / p.sum())
    if top_p < 1:
        cum = cum[: min(int(np.searchsorted(cum, top_p)) + 1, cum.size)]
    return int(order[min(int(np.searchsorted(cum, u * cum[-1], side="right")), cum.size - 1)])


@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0])  # flat (the nucleus spans thousands) to peaked
@pytest.mark.parametrize("top_p", [0.5, 0.95, 1.0])
def test_large_vocabularies_sample_as_a_full_sort_would(scale, top_p):
    """Without top-k, sample_next sorts no more than it must: a nucleus is looked for among the
    most likely 256 or 4,096 first (the same draws give the tokens a full sort gives, to float
    rounding at a boundary); the whole distribution is drawn from block by block in id order
    (other tokens for the same draw, the same frequencies)."""
    z = np.random.default_rng(7).standard_normal(5000) * scale
    z[123] = -np.inf  # a token of no weight is never drawn
    got = [sample_next(z, 0.9, 0, top_p, np.random.default_rng(s)) for s in range(1500)]
    assert 123 not in got
    if top_p < 1:
        want = [_reference(z, 0.9, top_p, np.random.default_rng(s).random()) for s in range(1500)]
        assert sum(g != w for g, w in zip(got, want, strict=True)) <= 3
    else:
        p = np.exp((z - z.max()) / 0.9)
        p /= p.sum()
        draws = np.random.default_rng(0)
        counts = np.bincount(
            [sample_next(z, 0.9, 0, 1.0, draws) for _ in range(20000)], minlength=z.size
        )
        top = np.argsort(-p)[:5]  # the likeliest few, whatever the scale
        np.testing.assert_allclose(counts[top] / 20000, p[top], atol=0.012)


def test_greedy_stream_equals_full_forward_argmax(gpt):
    prompt = [1, 5, 7]
    out = list(sample_stream(gpt, prompt, 8, temperature=0))
    ctx = list(prompt)
    for tok in out:
        assert tok == int(np.argmax(gpt.logits(np.array(ctx))[-1]))
        ctx.append(tok)
    assert len(out) == 8


def test_same_seed_same_output(gpt):
    a = list(sample_stream(gpt, [3, 4], 12, temperature=1.0, seed=42))
    b = list(sample_stream(gpt, [3, 4], 12, temperature=1.0, seed=42))
    c = list(sample_stream(gpt, [3, 4], 12, temperature=1.0, seed=43))
    assert a == b and len(a) == 12 and a != c


def test_stop_event_and_eot(gpt):
    stop = threading.Event()
    got = []
    for tok in sample_stream(gpt, [1], 50, temperature=1.0, seed=0, stop=stop):
        got.append(tok)
        if len(got) == 3:
            stop.set()
    assert len(got) == 3
    first = next(sample_stream(gpt, [1], 1, temperature=0))
    assert list(sample_stream(gpt, [1], 10, temperature=0, eot_id=first)) == []


def test_long_prompt_and_sliding_window(gpt):
    prompt = list(range(1, 29)) * 2  # longer than the context of 16
    out = list(sample_stream(gpt, prompt, 40, temperature=0))
    assert len(out) == 40  # runs past the context by sliding the window
    # the first token only depends on the last 16 prompt tokens
    assert out[0] == int(np.argmax(gpt.logits(np.array(prompt[-16:]))[-1]))
    with pytest.raises(ValidationError):
        list(sample_stream(gpt, [], 3))
    assert len(list(sample_stream(gpt, [], 3, temperature=0, eot_id=28))) <= 3


@settings(max_examples=60, deadline=None)
@given(
    logits=st.lists(st.floats(-20, 20), min_size=2, max_size=700),  # past blocks and 256
    top_k=st.integers(0, 45),
    top_p=st.floats(0.05, 1.0),
    temperature=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**31),
)
def test_sample_lies_in_top_k_and_nucleus(logits, top_k, top_p, temperature, seed):
    z = np.array(logits)
    tok = sample_next(z, temperature, top_k, top_p, np.random.default_rng(seed))
    order = np.argsort(-z, kind="stable")
    rank = int(np.nonzero(order == tok)[0][0])
    higher = int((z > z[tok]).sum())  # ties may sit on either side of a cut
    if 0 < top_k < z.size:
        assert higher < top_k
    p = np.exp((z - z.max()) / temperature)
    p = p[order] / p.sum()
    if top_p < 1:
        # every token ranked strictly above the sampled one was needed to reach top_p
        assert p[:higher].sum() < top_p + 1e-9 or rank == 0
