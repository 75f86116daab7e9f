"""`python -m cllm crawl NAME URL ...`: crawl web pages into a model's queue.

The crawl keeps its URL list in `models/<NAME>.crawl.sqlite`, so running the command again (with
or without URLs) resumes where a stopped or killed crawl was. A progress line goes to stderr and
the run ends with a summary (one JSON line with --json).
"""

from __future__ import annotations

import argparse
import sys
import time

from cllm.cli import add_models_dir, models_dir_of
from cllm.cli.common import ProgressLine, duration, snapshot_json
from cllm.crawl.crawler import FILTERS, CrawlConfig, Crawler, CrawlSnapshot
from cllm.crawl.urls import check_start_url
from cllm.errors import ValidationError

SUMMARY = ("state", "message", "pages", "tokens", "bytes", "pending", "crawled", "failed")
SUMMARY += ("blocked", "errors")

DEFAULTS = CrawlConfig()
NUMBERS = {  # flag -> (CrawlConfig field, type, help); the default is the field's
    "--max-pages": ("max_pages", int, "pages this run"),
    "--max-depth": ("max_depth", int, "link hops from a start URL"),
    "--timeout": ("timeout", float, "seconds a whole request may take, headers and body"),
    "--max-bytes": ("max_bytes", int, "a page is cut past this size"),
    "--retries": ("retries", int, "retries of transient failures"),
}
PATTERNS = {  # flag -> help; each repeatable
    "--include": "follow only links matching (glob, or re:REGEX; repeatable)",
    "--exclude": "never follow links matching (repeatable)",
}


def register(subparsers) -> None:
    p = subparsers.add_parser("crawl", help="crawl web pages into a model's queue")
    p.add_argument("name", help="the model whose queue receives the text")
    p.add_argument(
        "urls",
        nargs="*",
        metavar="URL",
        help="http or https start URLs (none: resume the pending URLs of the last crawl)",
    )
    for flag, (field, kind, text) in NUMBERS.items():
        default, metavar = getattr(DEFAULTS, field), "N" if kind is int else "S"
        doc = f"{text} (default {default})"
        p.add_argument(flag, type=kind, default=default, metavar=metavar, help=doc)
    p.add_argument(
        "--delay",
        type=float,
        default=DEFAULTS.min_delay,
        metavar="S",
        help=f"seconds between requests to one host, at least (default {DEFAULTS.min_delay:g})",
    )
    p.add_argument(
        "--max-delay",
        type=float,
        default=None,
        metavar="S",
        help="at most (default: twice --delay); each wait is drawn between the two",
    )
    p.add_argument(
        "--filter",
        choices=FILTERS,
        default=DEFAULTS.filter,
        help="text kept from HTML: all, readable text, metadata only, or metadata and text",
    )
    for flag, text in PATTERNS.items():
        p.add_argument(flag, action="append", default=[], metavar="PAT", help=text)
    p.add_argument("--any-host", action="store_true", help="follow links to other hosts too")
    p.add_argument("--reset", action="store_true", help="forget what was crawled; start over")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    add_models_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cllm.models.registry import (
        Registry,  # loads the model machinery: only when this command runs
    )

    config = CrawlConfig(
        **{field: getattr(args, field) for field, _, _ in NUMBERS.values()},
        min_delay=args.delay,
        max_delay=2 * args.delay if args.max_delay is None else args.max_delay,
        same_host=not args.any_host,
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        filter=args.filter,
    )
    config.validate()
    urls = [check_start_url(u) for u in args.urls]  # refused before anything is written
    registry = Registry(models_dir_of(args))
    name = registry.resolve(args.name)
    crawler = Crawler(registry.dir, name, config)
    try:
        if args.reset:
            crawler.db.reset_all()
        crawler.add_urls(urls)
        if crawler.snapshot().pending == 0:
            raise ValidationError(
                f"nothing to crawl for {name!r}: give a start URL"
                " (every URL of the last crawl is done; --reset starts over)"
            )
        t0 = time.monotonic()
        line = ProgressLine()  # in a log: one line each time a page has been downloaded
        crawler.start()
        try:
            while not crawler.join(0.2):
                snap = crawler.snapshot()
                line.show(_progress(snap, config.max_pages), key=snap.pages)
            snap = crawler.snapshot()
            line.show(_progress(snap, config.max_pages), key=snap.pages)  # the final count
        except KeyboardInterrupt:
            crawler.stop()  # the page being fetched finishes; the rest stays pending
            crawler.join()
            line.done()
            _summary(args, name, crawler.snapshot(), time.monotonic() - t0)
            raise
        line.done()
        snap = crawler.snapshot()
        _summary(args, name, snap, time.monotonic() - t0)
        if snap.state == "error":
            print(f"error: crawl failed: {snap.message}", file=sys.stderr)
            return 1
        return 0
    finally:
        crawler.close()


def _progress(s: CrawlSnapshot, max_pages: int) -> str:
    state = "" if s.state == "running" else f"[{s.state}] "
    return (
        f"{state}{duration(s.elapsed)} | {s.pages}/{max_pages} pages | {s.tokens:,} tokens"
        f" | {s.pending} pending | {s.failed} failed | {s.blocked} blocked | {s.current_url}"
    )


def _summary(args: argparse.Namespace, name: str, s: CrawlSnapshot, seconds: float) -> None:
    if args.json:
        print(snapshot_json(name, s, SUMMARY, seconds=round(seconds, 3)))
    else:
        print(
            f"{name}: {s.message}; {s.pages} page{'s' * (s.pages != 1)}, {s.tokens:,} tokens"
            f" queued in {duration(seconds)}"
            f" ({s.pending} pending, {s.failed} failed, {s.blocked} blocked)"
        )
