"""`python -m cllm crawl NAME URL ...`: crawl web pages into a model's queue.

The crawl keeps its URL list in `models/<NAME>.crawl.sqlite`, so running the command again (with
or without URLs) resumes where a stopped or killed crawl was. A progress line goes to stderr and
the run ends with a summary (one JSON line with --json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from cllm.cli import add_models_dir, models_dir_of
from cllm.crawl.crawler import FILTERS, CrawlConfig, Crawler, CrawlSnapshot, check_start_url
from cllm.errors import ValidationError

DEFAULTS = CrawlConfig()


def register(subparsers) -> None:
    p = subparsers.add_parser("crawl", help="crawl web pages into a model's queue")
    p.add_argument("name", help="the model whose queue receives the text")
    p.add_argument(
        "urls",
        nargs="*",
        metavar="URL",
        help="http or https start URLs (none: resume the pending URLs of the last crawl)",
    )
    p.add_argument(
        "--max-pages",
        type=int,
        default=DEFAULTS.max_pages,
        help="pages this run (default %(default)s)",
    )
    p.add_argument(
        "--max-depth",
        type=int,
        default=DEFAULTS.max_depth,
        help="link hops from a start URL (default %(default)s)",
    )
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
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PAT",
        help="follow only links matching (glob, or re:REGEX; repeatable)",
    )
    p.add_argument(
        "--exclude", action="append", default=[], metavar="PAT", help="never follow links matching"
    )
    p.add_argument("--any-host", action="store_true", help="follow links to other hosts too")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULTS.timeout,
        help="seconds per request (default %(default)s)",
    )
    p.add_argument(
        "--max-bytes", type=int, default=DEFAULTS.max_bytes, help="a page is cut past this size"
    )
    p.add_argument(
        "--retries",
        type=int,
        default=DEFAULTS.retries,
        help="for transient failures (default %(default)s)",
    )
    p.add_argument("--reset", action="store_true", help="forget what was crawled; start over")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    add_models_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cllm.models.registry import (
        Registry,  # loads the model machinery: only when this command runs
    )

    config = CrawlConfig(
        max_pages=args.max_pages,
        max_depth=args.max_depth,
        min_delay=args.delay,
        max_delay=2 * args.delay if args.max_delay is None else args.max_delay,
        max_bytes=args.max_bytes,
        timeout=args.timeout,
        retries=args.retries,
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
        line = _Line()
        crawler.start()
        try:
            while not crawler.join(0.2):
                line.show(_progress(crawler.snapshot(), config.max_pages))
            line.show(_progress(crawler.snapshot(), config.max_pages))  # the final count
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
        f"{state}{s.pages}/{max_pages} pages | {s.tokens:,} tokens | {s.pending} pending"
        f" | {s.failed} failed | {s.blocked} blocked | {s.current_url}"
    )


def _summary(args: argparse.Namespace, name: str, s: CrawlSnapshot, seconds: float) -> None:
    out = {
        "model": name,
        "state": s.state,
        "message": s.message,
        "pages": s.pages,
        "tokens": s.tokens,
        "bytes": s.bytes,
        "pending": s.pending,
        "crawled": s.crawled,
        "failed": s.failed,
        "blocked": s.blocked,
        "errors": s.errors,
        "seconds": round(seconds, 3),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{name}: {s.message}; {s.pages} page{'s' * (s.pages != 1)}, {s.tokens:,} tokens"
            f" queued in {seconds:.1f} s"
            f" ({s.pending} pending, {s.failed} failed, {s.blocked} blocked)"
        )


class _Line:
    """The progress line on stderr: rewritten in place on a terminal; elsewhere (a log, a
    pipe) one line each time a page has been downloaded."""

    def __init__(self) -> None:
        self.live = sys.stderr.isatty()
        self.shown = False
        self.last = ""

    def show(self, text: str) -> None:
        if self.live:
            sys.stderr.write("\r" + text[:119].ljust(119))
            self.shown = True
        elif text.split(" | ")[0] != self.last.split(" | ")[0]:  # the page count moved
            sys.stderr.write(text + "\n")
        self.last = text
        sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False
