"""The serving worker decodes its requests together (continuous batching) and each request gets
what it would get alone: its text, finish reason and token count, however they end."""

from __future__ import annotations

import threading
import time

import pytest

from cllm.engine.chat import Generation, Sampling, chat, complete
from cllm.engine.config import GPTConfig
from cllm.models.registry import Registry
from cllm.serve.pool import Job, ModelWorker

CFG = GPTConfig(vocab_size=257, n_embd=32, n_layer=2, n_head=2, block_size=64)


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("models"))
    reg.create("m", config=CFG, tokenizer="byte", text="hello world")
    reg.create("o", config=CFG, tokenizer="byte", text="hello world", seed=1)
    return reg.load("m"), reg.load("o")


class Collect:
    """A job's pieces and its end, as the server's reply would see them."""

    def __init__(self, make) -> None:
        self.pieces: list[str] = []
        self.err: BaseException | None = None
        self.done = threading.Event()
        self.job = Job(make, self.pieces.append, self._finish)

    def _finish(self, err) -> None:
        self.err = err
        self.done.set()

    def wait(self) -> str:
        assert self.done.wait(60)
        return "".join(self.pieces)


class NoEnd:
    """A tokenizer whose end-of-text is never sampled as such: a generation runs to its limit."""

    eot_id = None

    def __init__(self, tok) -> None:
        self.tok = tok

    def __getattr__(self, name):
        return getattr(self.tok, name)


def requests(lm, cancel=None):
    """Generations of every kind: greedy, sampled, a stop sequence that ends it early, a
    repetition penalty, a chat reply, one that runs past the context window (it slides)."""
    g, t = lm.gpt, lm.tokenizer
    return [
        complete(g, t, "Hello", Sampling(40, 0.0, 0, 1.0), cancel),
        complete(g, t, "abc", Sampling(25, 1.0, 0, 0.9, 1.0, 7), cancel),
        complete(g, t, "stop", Sampling(60, 1.0, 0, 1.0, 1.0, 2, stop=("e", "o")), cancel),
        complete(g, t, "xyz", Sampling(30, 0.8, 20, 1.0, 1.6, 3), cancel),
        chat(g, t, [("user", "hi")], Sampling(20, 0.7, 0, 1.0, 1.0, 5), cancel)[1],
        complete(g, t, "long", Sampling(150, 1.0, 0, 1.0, 1.0, 11), cancel),
    ]


def test_requests_decoded_together_equal_each_alone(lms):
    lm, _ = lms
    alone = requests(lm)
    want = [(g.run(), g.finish_reason, g.completion_tokens) for g in alone]
    assert any(r == "stop" for _, r, _ in want) and any(r == "length" for _, r, _ in want)
    w = ModelWorker("m", lm, ("test",))
    try:
        gens = requests(lm)
        jobs = [Collect(g) for g in gens]
        for j in jobs:
            w.submit(j.job)
        texts = [j.wait() for j in jobs]
        assert all(j.err is None for j in jobs)
        got = [(t, g.finish_reason, g.completion_tokens) for t, g in zip(texts, gens, strict=True)]
        assert got == want
        assert [g.text for g in gens] == texts
        # together: the steps are about the longest request's tokens, not the sum of all
        assert w.steps < sum(n for _, _, n in want) / 2
        assert w.served == len(jobs) and w._batch.free_slots == w.MAX_ACTIVE
    finally:
        w.retire()


def test_a_cancelled_request_leaves_and_frees_its_slot(lms):
    lm, _ = lms
    w = ModelWorker("m", lm, ("test",))
    try:
        cancel = threading.Event()
        big = Collect(lambda m: complete(m.gpt, NoEnd(m.tokenizer), "x", Sampling(100_000), cancel))
        w.submit(big.job)
        end = time.monotonic() + 30
        while not big.pieces and time.monotonic() < end:
            time.sleep(0.005)
        cancel.set()
        big.wait()
        gen = big.job.gen
        assert big.err is None and gen.finish_reason == "cancelled"
        assert 0 < gen.completion_tokens < 100_000
        assert w._batch.free_slots == w.MAX_ACTIVE and w.busy == 0
        # a request still waiting when its client left is never started
        late = Collect(lambda m: complete(m.gpt, m.tokenizer, "x", Sampling(5, 0.0)))
        late.job.cancel.set()
        w.submit(late.job)
        assert late.wait() == "" and late.err is None and not isinstance(late.job.gen, Generation)
    finally:
        w.retire()


def test_another_models_generation_runs_beside_the_batch(lms):
    lm, other = lms
    w = ModelWorker("m", lm, ("test",))
    try:
        mine, theirs = requests(lm)[0], requests(other)[1]
        want = [requests(lm)[0].run(), requests(other)[1].run()]
        jobs = [Collect(mine), Collect(theirs)]
        for j in jobs:
            w.submit(j.job)
        assert [j.wait() for j in jobs] == want
    finally:
        w.retire()


def test_a_failing_step_fails_its_requests_and_the_worker_goes_on(lms, monkeypatch):
    lm, _ = lms
    w = ModelWorker("m", lm, ("test",))
    try:
        first = Collect(lambda m: complete(m.gpt, m.tokenizer, "a", Sampling(5, 0.0)))
        w.submit(first.job)
        first.wait()
        boom = RuntimeError("the step failed")

        def fail(self):
            raise boom

        monkeypatch.setattr(type(w._batch), "step", fail)
        bad = Collect(lambda m: complete(m.gpt, m.tokenizer, "b", Sampling(5, 0.0)))
        w.submit(bad.job)
        bad.wait()
        assert bad.err is boom
        monkeypatch.undo()
        again = Collect(lambda m: complete(m.gpt, m.tokenizer, "a", Sampling(5, 0.0)))
        w.submit(again.job)
        assert again.wait() == "".join(first.pieces) and again.err is None
        # a bad request is refused on its own
        empty = Collect(lambda m: Generation(m.gpt, NoEnd(m.tokenizer), [], Sampling(5, 0.0)))
        w.submit(empty.job)
        empty.wait()
        assert "empty" in str(empty.err)
    finally:
        w.retire()
