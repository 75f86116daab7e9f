"""What a downloaded page holds: its kind, its text (through cllm.data.extract), its title, its
links and its robots meta tag. Bytes become text by the declared charset, never failing."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

from cllm.crawl.urls import normalize_url
from cllm.data.extract import extract_html

HTML_TYPES = {"text/html", "application/xhtml+xml"}
TEXT_TYPES = {"application/json", "application/xml", "application/javascript"}


class PageParser(HTMLParser):
    """Links, title, <base> and the robots meta tag of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.base: str | None = None
        self.title = ""
        self.noindex = self.nofollow = False
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("a", "area") and a.get("href"):
            if "nofollow" not in a.get("rel", "").lower().split():
                self.links.append(a["href"])
        elif tag == "base" and a.get("href") and self.base is None:
            self.base = a["href"]
        elif tag == "title":
            self._in_title = True
        elif tag == "meta" and a.get("name", "").lower() in ("robots", "crystallinecllm"):
            words = {w.strip() for w in a.get("content", "").lower().split(",")}
            self.noindex |= bool(words & {"noindex", "none"})
            self.nofollow |= bool(words & {"nofollow", "none"})

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = " ".join((self.title + data).split())


def parse_page(html: str) -> PageParser:
    parser = PageParser()
    parser.feed(html)
    parser.close()
    return parser


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)


def decode(body: bytes, charset: str | None, html: bool) -> str:
    """Bytes to text by the declared charset (header, then <meta>), else UTF-8, never failing."""
    if not charset and html:
        m = _META_CHARSET.search(body[:4096])
        charset = m.group(1).decode("ascii") if m else None
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except LookupError:
        codec = "utf-8"
    if codec == "utf-8":
        codec = "utf-8-sig"  # drops a byte order mark
    return body.decode(codec, errors="replace")


def page_kind(mime: str, body: bytes) -> str:
    """'html', 'text' or 'binary' from the type, sniffing only when the server sent none."""
    if mime in HTML_TYPES:
        return "html"
    if mime.startswith("text/") or mime in TEXT_TYPES or mime.endswith(("+xml", "+json")):
        return "text"
    if mime:
        return "binary"
    head = body[:1024]
    if b"\0" in head:
        return "binary"
    return "html" if head.lstrip().lower().startswith((b"<!doctype html", b"<html")) else "text"


@dataclass
class Page:
    """One page read: its kind, the text for the queue, and the links to follow."""

    kind: str  # 'html', 'text' or 'binary'
    text: str = ""
    title: str = ""
    links: list[str] = field(default_factory=list)  # absolute, normalized
    note: str = ""  # why no text was taken, when none was


def read_page(url: str, body: bytes | None, mime: str, charset: str | None, filter: str) -> Page:
    """The text, title and links of a page's body (None: a body whose encoding could not be
    undone). `filter` is cllm.data.extract.extract_html's mode; plain text is kept as it is,
    except by the metadata filter, which finds none in it."""
    kind = "binary" if body is None else page_kind(mime, body)
    if kind == "binary":
        return Page(kind, note=f"not text ({mime or 'unknown type'}), not queued")
    if kind == "text":
        return Page(kind, text="" if filter == "metadata" else decode(body, charset, html=False))
    html = decode(body, charset, html=True)
    parsed = parse_page(html)
    page = Page(kind, title=parsed.title)
    if parsed.noindex:
        page.note = "robots meta tag says noindex"
    else:
        page.text = extract_html(html, filter)
    if not parsed.nofollow:
        base = urljoin(url, parsed.base) if parsed.base else url
        page.links = [u for u in (normalize_url(h, base) for h in parsed.links) if u]
    return page


def preview_text(body: bytes, html: bool, filter: str) -> str:
    """The text of a stored copy of a page, as the queue would get it with `filter`."""
    if html:
        return extract_html(decode(body, None, html=True), filter)
    return decode(body, None, html=False)
