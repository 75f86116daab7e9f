"""Continuous training: a crawl of a small site on 127.0.0.1 trains the model as pages arrive."""

from __future__ import annotations

import pytest

from cllm.crawl.crawler import CrawlConfig, Crawler
from cllm.engine.config import GPTConfig
from cllm.models.registry import Registry
from cllm.train.continuous import ContinuousTraining
from tests.cllm.crawl.crawl_site import Site, chain_routes

FAST = dict(min_delay=0.0, max_delay=0.0, timeout=2.0, retries=1, backoff=0.05, max_depth=50)


def make_model(tmp_path) -> Registry:
    config = GPTConfig(vocab_size=257, n_embd=16, n_layer=1, n_head=1, block_size=32)
    reg = Registry(tmp_path)
    reg.create("m", config=config, tokenizer="byte", train=dict(batch_size=2, seq_len=16))
    return reg


@pytest.mark.parametrize("in_process", [False, True])  # the studio's rounds train in a process
def test_train_continuously(tmp_path, in_process):
    reg = make_model(tmp_path)
    with Site(chain_routes(4)) as site:
        c = Crawler(
            tmp_path,
            "m",
            CrawlConfig(**FAST),
            queue_factory=lambda: reg.queue("m"),
            follower=ContinuousTraining(tmp_path, "m", in_process=in_process),
        )
        c.start([site.url("/p0")])
        assert c.join(timeout=60), "crawl did not end"
        snap = c.snapshot()
        assert snap.state == "done" and snap.pages == 4, snap.message
        trained = [e.detail for e in snap.events if e.kind == "trained"]
        assert any(d.startswith("training epoch 1") for d in trained), snap.events
        assert snap.training.startswith("done"), snap.training
        c.close()
    meta = reg.info("m").meta
    assert meta.epochs_trained >= 1 and meta.tokens_seen > 0
    assert reg.info("m").busy is None  # the trainer let go of the model


def test_a_busy_model_is_reported_once_and_tried_again(tmp_path):
    """A model locked elsewhere: one 'cannot train yet' error, not one per page; once the lock
    is gone the next page starts a round."""
    reg = make_model(tmp_path)
    with reg.queue("m") as q:
        q.add_text("some text to train on " * 40, source="seed")
    follow = ContinuousTraining(tmp_path, "m")
    said: list[tuple[str, str]] = []
    report = lambda kind, text: said.append((kind, text))  # noqa: E731
    with reg.lock("m", "training elsewhere"):
        for _ in range(3):
            follow.queued(1)
            follow.poll(report)
    errors = [t for k, t in said if k == "error"]
    assert len(errors) == 1 and errors[0].startswith("cannot train yet"), said
    assert follow.trainer is None and follow.untrained == 3
    follow.queued(1)
    follow.poll(report)
    assert follow.trainer is not None and follow.untrained == 0
    follow.finish(report, lambda s: follow.trainer.join(s))
    assert follow.trainer is None
    assert ("trained", "training epoch 1 of 1 of m") in said
    assert reg.info("m").meta.epochs_trained == 1
