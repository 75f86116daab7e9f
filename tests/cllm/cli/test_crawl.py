"""`python -m cllm crawl` against a site on 127.0.0.1 (tests/cllm/crawl/crawl_site.py)."""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest

from cllm.cli import main
from cllm.engine.config import GPTConfig
from cllm.models.registry import Registry

from ..crawl.crawl_site import Site, chain_routes

FAST = ["--delay", "0", "--timeout", "2", "--max-depth", "10"]


@pytest.fixture
def models(tmp_path):
    config = GPTConfig(vocab_size=257, n_embd=16, n_layer=1, n_head=1, block_size=32)
    Registry(tmp_path).create("Crawly", config=config, tokenizer="byte")
    return tmp_path


def crawl(models, *args) -> int:
    return main(["crawl", "--models-dir", str(models), *FAST, *args])


def test_crawl_fills_the_queue_and_resumes(models, capsys):
    with Site(chain_routes(5)) as site:
        # the name's case need not match; the page limit stops the first run
        assert crawl(models, "crawly", site.url("/p0"), "--max-pages", "3", "--json") == 0
        captured = capsys.readouterr()
        out = json.loads(captured.out)
        assert out["model"] == "Crawly" and out["pages"] == 3 and out["tokens"] > 0
        assert "3/3 pages | " in captured.err  # the progress line (one per page off a terminal)
        assert out["pending"] == 1 and out["failed"] == 0 and out["seconds"] >= 0
        # again with no URL: resumes the pending ones
        assert crawl(models, "Crawly", "--json") == 0
        out = json.loads(capsys.readouterr().out)
        assert out["pages"] == 2 and out["pending"] == 0 and out["crawled"] == 5
        q = Registry(models).queue("Crawly")
        assert sorted(it.source for it in q.items()) == [site.url(f"/p{i}") for i in range(5)]
        assert sorted(site.paths()).count("/p0") == 1
        # nothing left: refused, until --reset starts over
        assert crawl(models, "Crawly") == 2
        assert "nothing to crawl" in capsys.readouterr().err
        assert crawl(models, "Crawly", "--reset", "--max-pages", "1") == 0
        assert "; 1 page, " in capsys.readouterr().out
        assert site.paths().count("/p0") == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["Crawly", "ftp://127.0.0.1/x"], "only http and https"),
        (["Crawly", "127.0.0.1/x"], "must start with http:// or https://"),
        (["Crawly", "http://["], "not a valid URL"),
        (["Nobody", "http://127.0.0.1:1/"], "no model named"),
        (["Crawly", "http://127.0.0.1:1/", "--delay", "2", "--max-delay", "1"], "maximum delay"),
        (["Crawly", "http://127.0.0.1:1/", "--include", "re:("], "regular expression"),
        (["Crawly", "http://127.0.0.1:1/", "--filter", "some"], "invalid choice"),
    ],
)
def test_refusals_exit_2_with_one_line(models, capsys, args, message):
    with pytest.raises(SystemExit) if "--filter" in args else nullcontext():
        assert crawl(models, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (models / "Crawly.crawl.sqlite").exists()  # refused before anything is written
