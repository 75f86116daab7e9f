"""The crawler against a small site on 127.0.0.1 (tests/cllm/crawl/crawl_site.py); nothing else is
ever contacted."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.crawl.crawler import CrawlConfig, Crawler
from cllm.crawl.store import CrawlDB, compile_pattern, exact_pattern
from cllm.crawl.urls import check_start_url, crawl_delay, normalize_url
from cllm.data.dataqueue import DataQueue
from cllm.engine.tokenizer import train_tokenizer
from cllm.errors import BusyError, ValidationError

from .crawl_site import BIG_SIZE, Page, Site, chain_routes, demo_routes, html, self_signed

ROOT = Path(__file__).resolve().parents[3]
FAST = dict(min_delay=0.0, max_delay=0.0, timeout=2.0, retries=1, backoff=0.05, max_depth=50)


def make_queue(models: Path, name: str = "m") -> DataQueue:
    return DataQueue(models / f"{name}_queue", train_tokenizer("byte", "", 256))


def crawl(models: Path, urls: list[str], q: DataQueue | None = None, **cfg) -> Crawler:
    """Run a crawl to its end; returns the (finished) crawler."""
    q = q or make_queue(models)
    crawler = Crawler(models, "m", CrawlConfig(**{**FAST, **cfg}), queue_factory=lambda: q)
    crawler.start(urls)
    assert crawler.join(timeout=30), "crawl did not end"
    return crawler


def queued(q: DataQueue) -> dict[str, str]:
    """source URL -> text of every queue item."""
    return {it.source: q.tokenizer.decode(q.tokens(it.id)) for it in q.items()}


def test_demo_site(tmp_path):
    q = make_queue(tmp_path)
    with Site(demo_routes()) as site:
        c = crawl(tmp_path, [site.url("/")], q, max_depth=2, max_bytes=50_000, timeout=1.5)
        snap, db, paths = c.snapshot(), c.db, site.paths()
        assert snap.state == "done", snap.message

        # robots.txt asked once, obeyed: the disallowed path is never requested
        assert paths.count("/robots.txt") == 1
        assert "/private/secret" not in paths
        assert db.get(site.url("/private/secret")).state == "blocked"
        # depth: / is 0, /a is 1, /a/1 is 2, /a/1/x would be 3
        assert "/a/1" in paths and "/a/1/x" not in paths
        assert db.get(site.url("/a/1/x")) is None
        # a redirect loop is stopped and recorded as failed, each hop requested once
        for hop in ("/loop/a", "/loop/b"):
            row = db.get(site.url(hop))
            assert row.state == "failed" and "redirect loop" in row.reason
        # the oversized page is cut at the cap and kept
        big = db.get(site.url("/big"))
        assert big.state == "crawled" and big.size == 50_000 and "truncated" in big.reason
        assert BIG_SIZE > 50_000
        # the slow page times out, retried once (transient), then failed
        slow = db.get(site.url("/slow"))
        assert slow.state == "failed" and "timed out" in slow.reason
        assert paths.count("/slow") == 2
        # 503 then 200: retried, then crawled and queued
        assert paths.count("/flaky") == 2 and db.get(site.url("/flaky")).state == "crawled"
        assert db.get(site.url("/missing")).reason == "HTTP 404"
        # other schemes and other hosts are never listed
        listed = [r.url for r in db.urls()]
        assert all(u.startswith(site.base) for u in listed), listed
        # nothing fetched twice except the retried pages; the fragment link is the same page
        once = {p: paths.count(p) for p in paths if p not in ("/slow", "/flaky")}
        assert set(once) == {
            *("/robots.txt", "/", "/a", "/a/1", "/loop/a", "/loop/b", "/big", "/data.bin"),
            *("/notes.txt", "/dup1", "/dup2", "/gz", "/missing"),
        }
        assert set(once.values()) == {1}, once

        texts = queued(q)
        assert texts[site.url("/notes.txt")] == "Plain notes, taken as they are.\n"
        assert site.url("/data.bin") not in texts  # recorded, not queued
        assert db.get(site.url("/data.bin")).state == "crawled"
        assert "flaky page answered" in texts[site.url("/flaky")]
        assert "Squeezed text." in texts[site.url("/gz")]
        # the same text under two URLs is stored once
        assert (site.url("/dup1") in texts) + (site.url("/dup2") in texts) == 1
        assert "Welcome to the test site." in texts[site.url("/")]
        assert snap.tokens == sum(it.n_tokens for it in q.items())
        assert snap.pages == len([p for p in db.pages()])

        # the Downloaded view: copies on disk, previews, types
        pages = {p.url: p for p in db.pages()}
        home = pages[site.url("/")]
        assert home.title == "Home" and "Welcome" in home.preview and Path(home.path).exists()
        assert pages[site.url("/data.bin")].content_type == "application/octet-stream"
        assert pages[site.url("/big")].truncated
        kinds = {e.kind for e in snap.events}
        assert {"downloaded", "extracted", "queued", "error"} <= kinds
        c.close()


def test_a_trickling_page_meets_the_deadline(tmp_path):
    """The timeout bounds the whole request, not each read: 100 bytes every 0.1 s for 1.5 s."""
    routes = {"/": Page(html("Trickle", "x" * 1400), trickle=0.1)}
    with Site(routes) as site:
        t0 = time.monotonic()
        c = crawl(tmp_path, [site.url("/")], timeout=0.5, retries=0)
        row = c.db.get(site.url("/"))
        assert row.state == "failed" and row.reason.startswith("timed out after 0.5 s"), row
        assert time.monotonic() - t0 < 1.4


def test_polite_delay_per_host(tmp_path):
    with Site(chain_routes(4)) as site:
        c = crawl(tmp_path, [site.url("/p0")], min_delay=0.15, max_delay=0.25)
        assert c.snapshot().pages == 4
        times = site.times()
        assert len(times) == 5  # robots.txt and four pages
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 0.15 - 0.01, gaps


def test_robots_crawl_delay(tmp_path):
    routes = chain_routes(3)
    routes["/robots.txt"] = Page("User-agent: *\nCrawl-delay: 0.2\n", type="text/plain")
    with Site(routes) as site:
        crawl(tmp_path, [site.url("/p0")])
        times = site.times()[1:]  # the pages, after robots.txt
        assert len(times) == 3
        assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.19


def test_crawl_delay_groups():
    robots = [
        "User-agent: *",
        "Crawl-delay: 2",
        "",
        "User-agent: OtherBot",
        "User-agent: CrystallineCLLM  # us",
        "Disallow: /x",
        "Crawl-delay: 0.5",
    ]
    assert crawl_delay(robots, "CrystallineCLLM/0.1") == 0.5
    assert crawl_delay(robots, "SomeoneElse/1.0") == 2.0
    assert crawl_delay(["User-agent: *", "Crawl-delay: nan"], "x") is None
    assert crawl_delay([], "x") is None


def test_downloaded_copies_are_bounded(tmp_path):
    with Site(chain_routes(4)) as site:
        c = crawl(tmp_path, [site.url("/p0")], keep_pages=2)
        pages = c.db.pages()
        assert len(pages) == 4  # all listed, newest first
        assert [bool(p.path) for p in pages] == [True, True, False, False]
        assert sorted(c.pages_dir.iterdir()) == sorted(Path(p.path) for p in pages[:2])
        assert b"page number 3" in Path(pages[0].path).read_bytes()


def test_page_limit_and_resume_after_stop(tmp_path):
    q = make_queue(tmp_path)
    with Site(chain_routes(8)) as site:
        c = crawl(tmp_path, [site.url("/p0")], q, max_pages=3)
        assert c.snapshot().message.startswith("page limit")
        assert c.snapshot().pages == 3 and c.snapshot().pending == 1
        c.close()
        # stopped mid-way by command
        c = Crawler(
            tmp_path,
            "m",
            CrawlConfig(**{**FAST, "min_delay": 0.3, "max_delay": 0.3}),
            queue_factory=lambda: q,
        )
        c.start()
        deadline = time.monotonic() + 10
        while c.snapshot().pages < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        c.stop()
        assert c.join(5) and c.snapshot().state == "stopped"
        c.close()
        # restarted: the rest, nothing twice
        c = crawl(tmp_path, [], q)
        assert c.snapshot().state == "done"
        pages = [p for p in site.paths() if p != "/robots.txt"]
        assert sorted(pages) == sorted(f"/p{i}" for i in range(8))
        assert len(q.items()) == 8


def test_resume_after_sigkill(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from cllm.crawl.crawler import CrawlConfig, Crawler
        from cllm.data.dataqueue import DataQueue
        from cllm.engine.tokenizer import train_tokenizer
        models = Path(sys.argv[1])
        q = DataQueue(models / "m_queue", train_tokenizer("byte", "", 256))
        cfg = CrawlConfig(min_delay=0.15, max_delay=0.15, timeout=2, max_depth=50)
        c = Crawler(models, "m", cfg, queue_factory=lambda: q)
        c.start([sys.argv[2]])
        c.join()
        """
    )
    with Site(chain_routes(10)) as site:
        proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), site.url("/p0")])
        deadline = time.monotonic() + 20
        while site.count("/p3") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert site.count("/p3") == 1
        # what the killed run left half done may be fetched again; nothing else may
        with sqlite3.connect(tmp_path / "m.crawl.sqlite") as raw:
            crawling = {u for (u,) in raw.execute("SELECT url FROM urls WHERE state='crawling'")}
        q = make_queue(tmp_path)
        c = crawl(tmp_path, [], q)
        assert c.snapshot().state == "done"
        for i in range(10):
            n = site.count(f"/p{i}")
            assert n == 1 or (n == 2 and site.url(f"/p{i}") in crawling), (i, n, crawling)
        assert sorted(it.source for it in q.items()) == sorted(
            site.url(f"/p{i}") for i in range(10)
        )


@settings(max_examples=12, deadline=None)
@given(
    st.integers(1, 7).flatmap(
        lambda n: st.lists(st.lists(st.integers(0, n - 1), max_size=4), min_size=n, max_size=n)
    ),
    st.integers(0, 3),
)
def test_any_site_is_crawled_breadth_first_once(links, max_depth):
    """On any link graph: each page within max_depth link hops of the start is fetched exactly
    once, and no other page is fetched."""
    routes = {
        f"/p{i}": html(f"Page {i}", f"Text of page {i}.", tuple(f"/p{j}" for j in out))
        for i, out in enumerate(links)
    }
    depth, frontier = {0: 0}, [0]
    while frontier:  # breadth-first distances from /p0
        i = frontier.pop(0)
        for j in links[i]:
            if j not in depth:
                depth[j] = depth[i] + 1
                frontier.append(j)
    expected = sorted(f"/p{i}" for i, d in depth.items() if d <= max_depth)
    with tempfile.TemporaryDirectory() as tmp, Site(routes) as site:
        c = crawl(Path(tmp), [site.url("/p0")], max_depth=max_depth)
        assert sorted(p for p in site.paths() if p != "/robots.txt") == expected
        assert c.snapshot().pages == len(expected)
        c.close()


def test_bad_start_urls_are_refused(tmp_path):
    c = Crawler(tmp_path, "m", CrawlConfig(**FAST), queue_factory=lambda: make_queue(tmp_path))
    for bad in ("ftp://127.0.0.1/x", "mailto:a@b.c", "example.com/page", "file:///etc/passwd", ""):
        with pytest.raises(ValidationError):
            c.start([bad])
    with pytest.raises(ValidationError, match="only http and https"):
        c.add_urls(["http://127.0.0.1/ok", "ftp://127.0.0.1/x"])
    assert c.db.urls() == []  # all checked before any is added
    c.close()


@pytest.mark.parametrize(
    "cfg",
    [
        dict(min_delay=2.0, max_delay=1.0),
        dict(filter="everything"),
        dict(max_pages=0),
        dict(timeout=0),
        dict(include=("re:(",)),
    ],
)
def test_bad_settings_are_refused(tmp_path, cfg):
    with pytest.raises(ValidationError):
        CrawlConfig(**cfg).validate()


@pytest.mark.parametrize("status,allowed", [(404, True), (403, True), (500, False)])
def test_robots_failures(tmp_path, status, allowed):
    """RFC 9309: a 4xx robots.txt allows everything, a 5xx disallows everything."""
    routes = {"/robots.txt": Page("no", status=status, type="text/plain"), "/": html("Home")}
    with Site(routes) as site:
        c = crawl(tmp_path, [site.url("/")], retries=0)
        assert ("/" in site.paths()) == allowed
        assert c.db.get(site.url("/")).state == ("crawled" if allowed else "blocked")


def test_redirects(tmp_path):
    routes = {
        "/start": Page(status=301, headers={"Location": "/moved"}),
        "/moved": html("Moved", "Arrived.", ("/start", "/far")),
        "/far": Page(status=302, headers={"Location": "/h1"}),
        **{f"/h{i}": Page(status=302, headers={"Location": f"/h{i + 1}"}) for i in range(1, 10)},
    }
    with Site(routes) as site:
        c = crawl(tmp_path, [site.url("/start")], max_redirects=3)
        assert c.db.get(site.url("/start")).reason == f"redirect to {site.url('/moved')}"
        assert c.db.get(site.url("/moved")).state == "crawled"
        far = c.db.get(site.url("/far"))
        assert far.state == "failed" and "more than 3 redirects" in far.reason
        assert site.count("/start") == 1 and site.count("/moved") == 1
        assert "/h4" not in site.paths()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")
def test_https(tmp_path):
    cert, tls = self_signed(tmp_path)
    with Site(chain_routes(2), tls=tls) as site:
        # an unknown certificate authority: refused, recorded, no crash
        c = crawl(tmp_path / "a", [site.url("/p0")], retries=0)
        row = c.db.get(site.url("/p0"))
        assert row.state == "blocked" and "CERTIFICATE_VERIFY_FAILED" in row.reason, row.reason
        assert site.paths() == []  # the handshake failed before any request
        # trusted: crawled over TLS
        q = make_queue(tmp_path / "b")
        c = crawl(tmp_path / "b", [site.url("/p0")], q, ca_file=str(cert))
        assert c.snapshot().pages == 2 and len(q.items()) == 2


def test_include_exclude_and_block_patterns(tmp_path):
    links = ("/docs/a", "/docs/b.pdf", "/blog/c", "/docs/skip/d")
    routes = {"/": html("Home", "", links), **{p: html(p) for p in links}}
    with Site(routes) as site:
        q = make_queue(tmp_path)
        c = Crawler(
            tmp_path,
            "m",
            CrawlConfig(**FAST, include=("/docs/",), exclude=("re:\\.pdf$",)),
            queue_factory=lambda: q,
        )
        assert c.db.block("*/skip/*") == 0
        c.start([site.url("/")])
        assert c.join(10)
        assert sorted(site.paths()) == ["/", "/docs/a", "/robots.txt"]
        assert c.db.get(site.url("/docs/skip/d")).state == "blocked"
        # unblocking puts it back to pending
        assert c.db.unblock("*/skip/*") == 1
        assert c.db.get(site.url("/docs/skip/d")).state == "pending"
        c.close()


def test_one_crawl_at_a_time(tmp_path):
    with Site(chain_routes(3)) as site:
        q = make_queue(tmp_path)
        first = Crawler(tmp_path, "m", CrawlConfig(**FAST), queue_factory=lambda: q)
        first.pause()
        first.start([site.url("/p0")])
        second = Crawler(tmp_path, "m", CrawlConfig(**FAST), queue_factory=lambda: q)
        with pytest.raises(BusyError, match="already being crawled"):
            second.start()
        first.close()
        second.start()  # the first one has let go
        assert second.join(10) and second.snapshot().pages == 3
        second.close()


def test_pause_resume(tmp_path):
    with Site(chain_routes(5)) as site:
        q = make_queue(tmp_path)
        c = Crawler(tmp_path, "m", CrawlConfig(**FAST), queue_factory=lambda: q)
        c.pause()  # queued before start: the thread pauses at its first check
        c.start([site.url("/p0")])
        deadline = time.monotonic() + 10
        while c.snapshot().state != "paused" and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert c.snapshot().state == "paused" and c.snapshot().pages == 0
        c.resume()
        assert c.join(10) and c.snapshot().pages == 5
        c.close()


def test_filters_and_meta_robots(tmp_path):
    page = (
        '<html><head><title>T</title><meta name="description" content="About cats.">'
        '<meta name="robots" content="nofollow"></head>'
        '<body><nav>Menu</nav><p>Cats sleep a lot.</p><a href="/next">next</a></body></html>'
    )
    routes = {"/": page, "/next": html("Next")}
    with Site(routes) as site:
        q = make_queue(tmp_path)
        crawl(tmp_path, [site.url("/")], q, filter="metadata")
        text = queued(q)[site.url("/")]
        assert "About cats." in text and "Cats sleep" not in text
        assert "/next" not in site.paths()  # nofollow


def test_normalize_url():
    assert normalize_url("HTTP://Example.COM:80") == "http://example.com/"
    assert normalize_url("https://x.org:443/a b?q=1#frag") == "https://x.org/a%20b?q=1"
    assert normalize_url("../c", "http://h/a/b/") == "http://h/a/c"
    assert normalize_url("http://user:pw@h:8080/") == "http://h:8080/"
    for bad in ("mailto:a@b", "ftp://h/x", "javascript:void(0)", "http://h:99999/", "http:///x"):
        assert normalize_url(bad) is None, bad
    assert check_start_url(" http://h/x ") == "http://h/x"


@given(st.text(max_size=40))
def test_normalize_is_idempotent(path):
    url = normalize_url("http://h/" + path)
    assert url is None or normalize_url(url) == url


def test_patterns():
    assert compile_pattern("*.pdf")("http://h/a.pdf")
    assert not compile_pattern("*.pdf")("http://h/a.pdf?x")
    assert compile_pattern("/docs/")("http://h/docs/x")
    assert compile_pattern("re:/p[0-9]+$")("http://h/p12")
    one = compile_pattern(exact_pattern("http://h/a?b=1"))
    assert one("http://h/a?b=1") and not one("http://h/a?b=12") and not one("http://h/a")
    with pytest.raises(ValidationError):
        compile_pattern("")


def test_crawldb_claims_and_requeue(tmp_path):
    path = tmp_path / "m.crawl.sqlite"
    db = CrawlDB(path)
    assert db.add("http://h/a", 0) == "pending" and db.add("http://h/a", 0) is None
    db.add("http://h/b", 1)
    row = db.claim_next()
    assert row.url == "http://h/a" and db.get("http://h/a").state == "crawling"
    assert not db.claim("http://h/a", 0)  # already taken
    db.close()
    db = CrawlDB(path)  # a killed crawl: 'crawling' goes back to pending, for the next crawler
    assert db.counts()["crawling"] == 1
    assert db.try_lock() and db.counts()["pending"] == 2
    other = CrawlDB(path)
    assert not other.try_lock() and other.lock_holder() == str(os.getpid())
    db.unlock()
    assert other.try_lock()
    other.close()
    db.finish("http://h/a", "failed", "HTTP 500", status=500)
    db.reset("http://h/a")
    assert db.get("http://h/a").state == "pending"
    db.block("*/private/*")
    assert db.add_many(["http://h/b", "http://h/c", "http://h/private/d"], 2, "http://h/a") == 2
    assert db.get("http://h/c").depth == 2 and db.get("http://h/private/d").state == "blocked"
    db.log("error", "http://h/a", "x")
    assert db.events()[-1].detail == "x"
    db.close()
