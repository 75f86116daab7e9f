"""The Crawler tab driven through the real event loop, against a small site on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys

import pygame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from app import theme as th
from app.tabs import crawler as tab_crawler
from cllm.crawl.store import CrawlDB
from cllm.crawl.urls import check_start_url
from cllm.errors import BusyError
from cllm.models.registry import Registry
from tests.cllm.crawl.crawl_site import Page, Site, chain_routes

from .conftest import drag, frames_until, key, move, press, rect_of, settle, type_text

CTRL = pygame.KMOD_LCTRL


@pytest.fixture
def site():
    routes = chain_routes(40)
    routes["/notes.txt"] = Page("Plain notes.\n", type="text/plain")
    with Site(routes) as s:
        yield s


@pytest.fixture
def tab(studio):
    """The Crawler tab with 'beta' (an empty queue) as the target model."""
    studio.st.select("beta")
    frames_until(studio, lambda: studio.st.loaded and not studio.worker.busy)
    press(studio, "tab:Crawler")
    s = tab_crawler.state(studio.st)
    frames_until(studio, lambda: s["data"] is not None and s["data"].name == "beta")
    return studio


def store(studio, name="beta") -> CrawlDB:
    return CrawlDB(studio.st.models_dir / f"{name}.crawl.sqlite")


def states(studio, name="beta") -> dict[str, str]:
    with store(studio, name) as db:
        return {u.url: u.state for u in db.urls(limit=1000)}


def red_pixels(studio, rect) -> int:
    surf = pygame.display.get_surface()
    r = pygame.Rect(rect).clip(surf.get_rect())
    return sum(
        surf.get_at((x, y))[:3] == th.ERROR
        for x in range(r.x, r.right)
        for y in range(r.y, r.bottom, 2)
    )


def set_delays_to_zero(studio) -> None:
    """Drag both delay sliders to their left end (the minimum first: the maximum never goes
    below it)."""
    s = tab_crawler.state(studio.st)
    for label in ("Min delay", "Max delay"):
        r = rect_of(studio, f"crawler/sl:{label}")
        y = r.y + r.h - 6
        drag(studio, (r.centerx, y), (r.x - 50, y))
    assert s["settings"].min_delay == 0 and s["settings"].max_delay == 0


def test_add_url_validates_as_you_type(tab, site):
    s = tab_crawler.state(tab.st)
    field = rect_of(tab, "crawler/url")
    message = (field.x, field.bottom + 2, field.w + 150, 18)
    assert red_pixels(tab, message) == 0
    press(tab, "crawler/url")
    for bad, why in (
        ("ftp://127.0.0.1/file.txt", "only http and https"),
        ("http://", "has no host"),
        ("example.com", "must start with http:// or https://"),
    ):
        key(tab, pygame.K_a, CTRL)
        type_text(tab, bad)
        assert why in tab_crawler.url_problem(s["url_text"])
        assert red_pixels(tab, message) > 20  # the reason is shown under the field, in red
        key(tab, pygame.K_RETURN)  # refused: nothing is added
        press(tab, "crawler/url")
        tab.pump(3)
    assert not (tab.st.models_dir / "beta.crawl.sqlite").exists()
    key(tab, pygame.K_a, CTRL)
    type_text(tab, site.url("/p0"))
    assert red_pixels(tab, message) == 0
    press(tab, "crawler/Add")
    frames_until(tab, lambda: s["data"].counts.get("pending") == 1)
    assert states(tab) == {site.url("/p0"): "pending"}
    assert s["url_text"] == ""  # the field empties once the URL is in


def test_crawl_start_stop_downloaded_view_and_queue(tab, site):
    st, s = tab.st, tab_crawler.state(tab.st)
    set_delays_to_zero(tab)
    s["settings"].min_delay = s["settings"].max_delay = 0.05  # slow enough to stop midway
    s["settings"].max_depth = 20
    press(tab, "crawler/url")
    type_text(tab, site.url("/p0"))
    key(tab, pygame.K_RETURN)
    frames_until(tab, lambda: s["data"].counts.get("pending") == 1)
    press(tab, "crawler/start")
    frames_until(tab, lambda: st.crawler is not None)
    # a running crawl makes rename and delete refuse
    with pytest.raises(BusyError, match="crawling"):
        Registry(st.models_dir).delete("beta")
    seen = []
    frames_until(tab, lambda: seen.append((s["snap"].pages, s["snap"].tokens)) or seen[-1][0] >= 4)
    assert seen == sorted(seen) and seen[-1][1] > 0  # pages and tokens only rise
    assert seen[0][0] < 4  # and were seen rising, frame by frame
    press(tab, "crawler/start")  # now STOP CRAWLER
    frames_until(tab, lambda: st.crawler is None)
    last = s["last"]["beta"]
    assert last.state == "stopped" and 4 <= last.pages < 40
    urls = states(tab)
    crawled = [u for u, v in urls.items() if v == "crawled"]
    assert len(crawled) == last.pages and "pending" in urls.values()
    # the pages are in beta's queue, each with its URL as the source
    with Registry(st.models_dir).queue("beta") as q:
        assert sorted(i.source for i in q.items()) == sorted(crawled)
    # the Downloaded view lists them; a click shows the text extracted from the stored copy
    press(tab, "crawler/view:downloaded", 2)
    frames_until(tab, lambda: s["data"].page_total == last.pages and len(s["data"].pages) > 0)
    tab.pump(2)
    press(tab, f"crawler/page:{site.url('/p1')}")
    frames_until(tab, lambda: s["preview"] is not None and s["preview"][1] is not None)
    assert s["preview"][0] == site.url("/p1")
    assert "This is page number 1 of the chain." in s["preview"][1]
    # back to the links: block one pending URL, remove another, reset a crawled one
    press(tab, "crawler/view:links", 2)  # the second frame shows the view
    press(tab, "crawler/shows:pending")
    frames_until(tab, lambda: s["data"].shows == "pending" and len(s["data"].urls) == 1)
    pending = s["data"].urls[0].url
    move(tab, rect_of(tab, f"crawler/row:{pending}").center)
    press(tab, f"crawler/block:{pending}")
    frames_until(tab, lambda: states(tab)[pending] == "blocked")
    press(tab, "crawler/shows:blocked")
    frames_until(tab, lambda: s["data"].shows == "blocked" and len(s["data"].urls) == 1)
    move(tab, rect_of(tab, f"crawler/row:{pending}").center)
    press(tab, f"crawler/remove:{pending}")
    frames_until(tab, lambda: pending not in states(tab))
    press(tab, "crawler/shows:all")
    frames_until(tab, lambda: s["data"].shows == "all" and s["data"].urls)
    first = site.url("/p0")
    move(tab, rect_of(tab, f"crawler/row:{first}").center)
    press(tab, f"crawler/reset:{first}")
    frames_until(tab, lambda: states(tab)[first] == "pending")


def test_training_tab_starts_and_stops_the_crawler(tab, site):
    st, s = tab.st, tab_crawler.state(tab.st)
    s["settings"].min_delay = s["settings"].max_delay = 0.2
    press(tab, "crawler/url")
    type_text(tab, site.url("/p0"))
    key(tab, pygame.K_RETURN)
    frames_until(tab, lambda: s["data"].counts.get("pending") == 1)
    press(tab, "tab:Training")
    press(tab, "training/crawl")  # START CRAWLER for the selected model
    frames_until(tab, lambda: st.crawler is not None and st.crawler.name == "beta")
    frames_until(tab, lambda: st.crawler.snapshot().pages >= 1)
    press(tab, "training/crawl")  # STOP CRAWLER
    frames_until(tab, lambda: st.crawler is None)
    assert s["last"]["beta"].state == "stopped"


def test_closing_the_window_stops_the_crawl(tab, site):
    """Studio.close stops a running crawl and waits for it (continuous training, if on, saves a
    checkpoint); the crawl is recorded as stopped, its pending URLs kept for the next start."""
    st, s = tab.st, tab_crawler.state(tab.st)
    s["settings"].min_delay = s["settings"].max_delay = 0.3
    st.start_crawl("beta", [site.url("/p0")])
    frames_until(tab, lambda: st.crawler is not None and st.crawler.snapshot().pages >= 1)
    c = st.crawler
    tab.close()
    assert not c.running and c.snapshot().state == "stopped"
    assert "pending" in states(tab).values()


def test_nothing_to_crawl_is_refused_and_bad_patterns_are_not_taken(tab):
    st, s = tab.st, tab_crawler.state(tab.st)
    press(tab, "crawler/start")
    settle(tab)
    assert st.crawler is None
    assert any("nothing to crawl" in t.text.lower() for t in tab.ui.toasts)
    press(tab, "crawler/exclude")
    type_text(tab, "*.pdf re:[unclosed")
    field = rect_of(tab, "crawler/exclude")
    assert red_pixels(tab, (field.x, field.bottom + 2, field.w, 18)) > 20
    assert s["settings"].exclude == ""  # the last good value stays
    key(tab, pygame.K_BACKSPACE)
    for _ in range(len(" re:[unclosed") - 1):
        key(tab, pygame.K_BACKSPACE)
    assert s["settings"].exclude == "*.pdf"
    press(tab, "crawler/filter:metadata")
    press(tab, "crawler/train")
    press(tab, "crawler/same")
    cfg = s["settings"].config()
    assert cfg.filter == "metadata" and cfg.exclude == ("*.pdf",)
    assert s["settings"].train_continuously and not cfg.same_host


def test_reset_all_and_clear_ask_first(tab, site):
    s = tab_crawler.state(tab.st)
    with store(tab) as db:
        for i in range(3):
            db.add(site.url(f"/p{i}"), 0)
        db.finish(site.url("/p0"), "crawled")
    s["polled_at"] = 0.0
    frames_until(tab, lambda: s["data"].counts.get("crawled") == 1)
    press(tab, "crawler/Reset All URLs")
    press(tab, "crawler/dialog:confirm/dlg-cancel")
    tab.pump(3)
    assert states(tab)[site.url("/p0")] == "crawled"
    press(tab, "crawler/Reset All URLs")
    press(tab, "crawler/dialog:confirm/dlg-ok")
    frames_until(tab, lambda: set(states(tab).values()) == {"pending"})
    press(tab, "crawler/Clear")
    press(tab, "crawler/dialog:confirm/dlg-ok")
    frames_until(tab, lambda: states(tab) == {})
    frames_until(tab, lambda: s["data"].counts and sum(s["data"].counts.values()) == 0)


HOLDER = """
import sys, time
from cllm.crawl.store import CrawlDB
from cllm.crawl.urls import check_start_url
db = CrawlDB(sys.argv[1])
assert db.try_lock()
print("crawling", flush=True)
time.sleep(60)
"""


def test_a_crawl_in_another_process_is_shown_and_start_refused(tab, site):
    st = tab.st
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(st.models_dir / "beta.crawl.sqlite")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "crawling"
        st.refresh()
        frames_until(tab, lambda: tab_crawler.elsewhere(st, "beta") == f"pid {proc.pid}")
        press(tab, "crawler/url")
        type_text(tab, site.url("/p0"))
        press(tab, "crawler/start")  # START takes the typed URL along
        settle(tab)
        assert st.crawler is None
        assert any("already being crawled" in t.text for t in tab.ui.toasts)
        assert states(tab) == {site.url("/p0"): "pending"}  # the URL waits for our turn
    finally:
        proc.kill()
        proc.wait()


def test_a_long_url_list_scrolls_and_reads_the_rows_in_view(tab):
    s = tab_crawler.state(tab.st)
    urls = [f"http://127.0.0.1:9/page{i:04d}" for i in range(2000)]
    with store(tab) as db:
        db.add_many(urls, 1)
    s["polled_at"] = 0.0
    frames_until(tab, lambda: s["data"].counts.get("pending") == 2000)
    assert len(s["data"].urls) == tab_crawler.WINDOW  # never the whole list at once
    rect_of(tab, f"crawler/row:{urls[0]}")
    move(tab, rect_of(tab, f"crawler/row:{urls[3]}").center)
    pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=-1000, flipped=False))
    frames_until(tab, lambda: f"crawler/row:{urls[-1]}" in tab.ui.drawn)
    assert f"crawler/row:{urls[0]}" not in tab.ui.drawn


URLISH = hs.text(alphabet="htps:/[]@.?#%:-_ ax1\u00e9\u4e16", max_size=30)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # re: "possible nested set" in '[['
@settings(max_examples=300, deadline=None)
@given(hs.one_of(URLISH, hs.builds(lambda t: "http://" + t, URLISH), hs.text(max_size=30)))
def test_url_and_pattern_checks_answer_any_text(text):
    """What is typed is checked every frame: any text gets an answer, never an exception, and
    text found fine is accepted by the crawler."""
    problem = tab_crawler.url_problem(text)
    if not problem:
        for u in text.split():
            check_start_url(u)
    tab_crawler.pattern_problem(text)
    tab_crawler.pattern_problem("re:" + text)


def test_train_continuously_trains_the_target_on_the_crawled_pages(tab, site):
    st, s = tab.st, tab_crawler.state(tab.st)
    s["settings"].min_delay = s["settings"].max_delay = 0.0
    s["settings"].max_pages = 8
    s["settings"].max_depth = 20
    press(tab, "crawler/train")
    press(tab, "crawler/url")
    type_text(tab, site.url("/p0"))
    press(tab, "crawler/start")
    frames_until(tab, lambda: st.crawler is not None)
    frames_until(tab, lambda: st.crawler is None, timeout=60)
    last = s["last"]["beta"]
    assert last.state == "done" and last.pages == 8
    assert any(e.kind == "trained" for e in last.events)
    info = Registry(st.models_dir).info("beta")
    assert info.meta.epochs_trained >= 1 and info.queue_items == 8
