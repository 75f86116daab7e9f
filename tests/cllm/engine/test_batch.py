"""Batched decoding: streams of different lengths, joining and leaving between steps, give the
tokens each stream gets alone."""

import numpy as np
import pytest

from cllm.engine.batch import BatchDecoder, generate_batch
from cllm.engine.config import GPTConfig
from cllm.engine.generate import sample_stream
from cllm.engine.model import GPT
from cllm.errors import ValidationError

CFG = GPTConfig(vocab_size=37, n_embd=16, n_layer=2, n_head=2, block_size=24)


@pytest.fixture(scope="module")
def gpt():
    g = GPT(CFG, seed=3, threads=2)
    g.params *= 15  # peaked distributions: greedy choices are not near-ties
    return g


def alone(gpt, prompt, n, **kw):
    return list(sample_stream(gpt, prompt, n, temperature=0.0, top_k=0, top_p=1.0, **kw))


def test_greedy_batched_equals_single_streams(gpt):
    rng = np.random.default_rng(0)
    # prompts of different lengths, more prompts than slots (so streams join as others leave),
    # one longer than the context (its start is dropped) and runs past it (the window slides)
    prompts = [rng.integers(0, 37, n).tolist() for n in (1, 5, 11, 3, 30, 7, 2)]
    lengths = [9, 4, 30, 12, 6, 1, 20]
    got = [
        generate_batch(gpt, [p], n, max_streams=3)[0] for p, n in zip(prompts, lengths, strict=True)
    ]  # one at a time through the batch decoder
    want = [alone(gpt, p, n) for p, n in zip(prompts, lengths, strict=True)]
    assert got == want
    dec = BatchDecoder(gpt, max_streams=3)
    out, owner, queue = {}, {}, list(range(len(prompts)))
    while queue or dec.active:
        while queue and dec.free_slots:
            i = queue.pop(0)
            owner[dec.add(prompts[i], lengths[i], temperature=0.0)] = i
            out[i] = []
        for ev in dec.step():
            out[owner[ev.stream]].append(ev.token)
            assert ev.done == (len(out[owner[ev.stream]]) == lengths[owner[ev.stream]])
    assert [out[i] for i in range(len(prompts))] == want


def test_end_of_text_and_cancel_free_slots(gpt):
    prompt = [1, 2, 3]
    first = alone(gpt, prompt, 12)
    k = next(i for i in range(1, 12) if first[i] not in first[:i])
    eot = first[k]  # its first appearance ends the stream, after k tokens
    dec = BatchDecoder(gpt, max_streams=2)
    a = dec.add(prompt, 10, temperature=0.0, eot_id=eot)
    b = dec.add([4, 5], 10, temperature=0.0)
    with pytest.raises(ValidationError, match="busy"):
        dec.add([6], 3)
    events = [dec.step() for _ in range(k + 1)]
    assert [e.token for ev in events[:k] for e in ev if e.stream == a] == first[:k]
    last = [e for e in events[k] if e.stream == a][0]
    assert last.token is None and last.done and last.reason == "stop"
    assert dec.active == 1 and dec.free_slots == 1
    dec.cancel(b)
    assert dec.active == 0 and dec.free_slots == 2
    assert dec.step() == []


def test_sampling_per_stream_follows_its_seed(gpt):
    prompts = [[1, 2], [3], [4, 5, 6]]
    got = generate_batch(gpt, prompts, 8, max_streams=3, temperature=1.0, top_k=0, seed=10)
    for i, p in enumerate(prompts):
        want = list(sample_stream(gpt, p, 8, temperature=1.0, top_k=0, top_p=1.0, seed=10 + i))
        assert got[i] == want


def test_step_refuses_bad_rows(gpt):
    cache = gpt.new_cache(2)
    with pytest.raises(ValidationError):
        gpt.step([1, 2], cache, [0, 0], [0, 0])  # one slot twice
    with pytest.raises(ValidationError):
        gpt.step([1], cache, [2], [0])
    with pytest.raises(ValidationError):
        gpt.step([1], cache, [0], [CFG.block_size])
    with pytest.raises(ValidationError):
        gpt.step([CFG.vocab_size], cache, [0], [0])
