"""One extraction layer: text from the files people have, for ``queue add``, the studio's drop,
Add Files and Add Folder, the Research tab and the crawler.

``iter_documents(path)`` yields the documents of a file (an archive holds many), each a ``Doc``
whose text pieces are made lazily, so a big file is never held whole:

- plain text and source code: decoded as a stream. UTF-8/16/32 with a byte order mark, then
  UTF-8, then the encoding ``charset-normalizer`` detects (Latin-1, cp1252, Shift-JIS, ...); the
  encoding is recorded on the document;
- HTML: the main content (``trafilatura``; the built-in parser when it finds none);
- Markdown: rendered to plain text by ``markdown-it-py``, code blocks kept as code;
- PDF (``pypdf``), DOCX (``python-docx``), EPUB (``ebooklib``, each chapter in spine order through
  the HTML extraction): see ``documents.py``;
- JSONL, JSON arrays, CSV/TSV and Parquet (``pyarrow``, optional): one field per record, records
  separated by ``END_OF_TEXT``: see ``records.py``;
- archives (.gz .bz2 .xz .zip .tar and compressed tars): expanded as a stream, each member by its
  kind, under caps on the expanded size and the member count: see ``archives.py``.

Anything that holds no usable text is refused with ``Skipped``, whose ``reason`` is a short
phrase (``binary``, ``empty``, ``undecodable ...``, ``corrupt PDF ...``). ``ArchiveRefused`` (a
``Skipped``) refuses a whole archive: nothing of it goes in.

HTML filters (``extract_html`` and the crawler):
- ``text``: the main content of the page: the article without navigation, ads, related links,
  comments and footers;
- ``metadata``: the title, the author, the description and the keywords, one per line;
- ``mixed``: the metadata lines, then the text;
- ``all``: the title, description, keywords and every text node, boilerplate included (scripts
  and styles are code, not text, and stay out).
"""

from __future__ import annotations

import codecs
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO

from cllm.errors import CLLMError

CHUNK = 1 << 20
SNIFF = 8192
DETECT_BYTES = 1 << 16  # bytes given to the encoding detector
HTML_MODES = ("all", "text", "metadata", "mixed")

HTML_EXT = {".html", ".htm", ".xhtml", ".shtml"}
MARKDOWN_EXT = {".md", ".markdown", ".mdown", ".mkd"}
CODE_EXT = set(
    ".py .pyi .c .h .cc .cpp .cxx .hpp .hh .cu .js .mjs .ts .tsx .jsx .java .kt .scala .go .rs .rb"
    " .php .pl .pm .lua .sh .bash .zsh .ps1 .bat .swift .m .mm .cs .fs .r .jl .hs .ml .ex .exs"
    " .erl .clj .lisp .el .vim .sql .css .scss .less .json .yaml .yml .toml .ini .cfg .xml .cmake"
    " .mk .asm .s .zig .nim .dart .v .sv .vhd .tex .proto .gradle".split()
)
CODE_NAMES = {"makefile", "dockerfile", "cmakelists.txt", "rakefile", "gemfile"}
DOCUMENT_EXT = {".pdf": "pdf", ".docx": "docx", ".epub": "epub"}
RECORD_EXT = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
}

for _name in ("pypdf", "trafilatura", "htmldate", "courlan", "charset_normalizer", "ebooklib"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)  # each refusal is one line: ours


class Skipped(CLLMError):
    """A file that holds no text to learn from; ``reason`` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ArchiveRefused(Skipped):
    """A whole archive is refused (a bomb, an unsafe path, a corrupt stream): none of it goes in."""


class _EndOfText:
    """The separator between the records of a data file, in a stream of text pieces."""

    def __repr__(self) -> str:
        return "END_OF_TEXT"


END_OF_TEXT = _EndOfText()


@dataclass
class Doc:
    """One document of a file (an archive holds many): its text pieces (``END_OF_TEXT`` between
    records), made lazily, or the reason it is skipped. ``notes`` gathers what was dropped inside
    it while its pieces were read (broken lines of a JSONL, ragged rows of a CSV)."""

    source: str
    kind: str
    pieces: Iterator = field(default_factory=lambda: iter(()))
    encoding: str = ""
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """Caps that keep a hostile file from exhausting memory or disk."""

    archive_bytes: int = 4 << 30  # expanded bytes of one archive, members together
    archive_members: int = 20_000
    in_memory: int = 256 << 20  # a PDF, DOCX, EPUB, JSON array or nested zip read whole
    depth: int = 3  # archives inside archives


def short(err: BaseException) -> str:
    """An exception as a few words on one line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def file_kind(path: str | Path, head: bytes = b"") -> str:
    """``html``, ``markdown``, ``code`` or ``text``, by extension, then by a look at the start."""
    name = os.path.basename(path).lower()
    ext = os.path.splitext(name)[1]
    if ext in HTML_EXT:
        return "html"
    if ext in MARKDOWN_EXT:
        return "markdown"
    if ext in CODE_EXT or name in CODE_NAMES:
        return "code"
    start = head[:512].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


_CONTROLS = bytes(c for c in range(32) if c not in (9, 10, 11, 12, 13, 27))


def is_binary(head: bytes) -> bool:
    """NUL bytes, or many control bytes, in the first bytes of a file mean it is not text."""
    if not head:
        return False
    if b"\0" in head:
        return True
    # Tab, newline, vertical tab, form feed, carriage return and escape occur in real text.
    controls = len(head) - len(head.translate(None, _CONTROLS))
    return controls / len(head) > 0.05


def _decoder_for(head: bytes) -> tuple[str, int]:
    """Codec and the number of BOM bytes to drop."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return ("utf-32-le" if head.startswith(codecs.BOM_UTF32_LE) else "utf-32-be"), 4
    if head.startswith(codecs.BOM_UTF16_LE):
        return "utf-16-le", 2
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16-be", 2
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    return "", 0


def _read(f: BinaryIO, n: int) -> bytes:
    try:
        return f.read(n)
    except Skipped:
        raise
    except OSError as err:
        raise Skipped(f"unreadable ({err.strerror or short(err)})") from None


# Where the detector finds several encodings equally likely (French text reads the same in
# cp1252, cp1250 and cp1257 except for a few letters), the most widely used one wins.
PREFERRED = [
    codecs.lookup(c).name
    for c in (
        "cp1252",
        "latin-1",
        "iso8859-15",
        "cp932",
        "shift_jis",
        "euc_jp",
        "gb18030",
        "big5",
        "euc_kr",
        "cp1251",
        "koi8_r",
        "cp1250",
        "iso8859-2",
        "cp1253",
        "cp1254",
        "cp1255",
        "cp1256",
        "cp1257",
        "cp1258",
    )
]


def _detect(head: bytes) -> str:
    """The encoding of text that is not UTF-8, or ``Skipped``."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - a dependency; kept usable without it
        raise Skipped("undecodable (not UTF-8 text)") from None
    results = from_bytes(head)
    best = results.best()
    if best is None or not best.encoding:
        raise Skipped("undecodable (no text encoding fits)")
    tied = {
        codecs.lookup(m.encoding).name
        for m in results
        if m.chaos == best.chaos and m.coherence == best.coherence
    }
    text = str(best)
    for name in PREFERRED:
        if name in tied:
            return name
        try:  # the same text in a more common encoding (the detector lists one of equals)
            if head.decode(name) == text:
                return name
        except UnicodeDecodeError:
            pass
    return codecs.lookup(best.encoding).name


def decode_stream(f: BinaryIO, head: bytes, chunk_size: int = CHUNK) -> tuple[str, Iterator[str]]:
    """(encoding, text chunks) of a byte stream whose first bytes, ``head``, were read already.

    Refuses (``Skipped``) empty and binary streams now, and undecodable bytes while iterating.
    """
    if not head:
        raise Skipped("empty")
    codec, bom = _decoder_for(head)
    if not codec:
        if is_binary(head):  # UTF-16/32 text is full of NULs: only sniff without a BOM
            raise Skipped("binary")
        try:
            codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=False)
            codec = "utf-8"
        except UnicodeDecodeError:
            if len(head) < DETECT_BYTES:
                head += _read(f, DETECT_BYTES - len(head))
            codec = _detect(head)

    def chunks() -> Iterator[str]:
        dec = codecs.getincrementaldecoder(codec)("strict")
        data, offset = head[bom:], bom
        while True:
            try:
                text = dec.decode(data, final=not data)
            except UnicodeDecodeError as err:
                where = offset + err.start
                raise Skipped(f"undecodable (not {codec.upper()} text at byte {where})") from None
            if text:
                yield text
            if not data:
                return
            offset += len(data)
            data = _read(f, chunk_size)

    return codec, chunks()


def _whole_lines(pieces: Iterator[str]) -> Iterator[str]:
    """Re-cut text pieces at line ends, so a line never straddles two chunks."""
    carry = ""
    for piece in pieces:
        piece = carry + piece
        cut = piece.rfind("\n") + 1
        if cut == 0 and len(piece) < 4 * CHUNK:  # a huge line with no newline is cut anyway
            carry = piece
            continue
        if cut == 0:
            cut = len(piece)
        carry = piece[cut:]
        yield piece[:cut]
    if carry:
        yield carry


def _joined(chunks: Iterator[str], limit: int, what: str) -> str:
    """Chunks joined, refused past ``limit`` characters (formats that must be parsed whole)."""
    out, n = [], 0
    for c in chunks:
        n += len(c)
        if n > limit:
            raise Skipped(f"{what} too big to parse whole (over {limit >> 20} MiB)")
        out.append(c)
    return "".join(out)


# ------------------------------------------------------------------------------------ dispatch

_MAGIC = (
    (b"%PDF-", "pdf"),
    (b"PK\x03\x04", "zip"),
    (b"\x1f\x8b", "gz"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PAR1", "parquet"),
)


def sniff_kind(name: str, head: bytes) -> str:
    """The extractor for a file: by extension, then by its first bytes (magic numbers)."""
    from cllm.data.archives import archive_kind

    low = name.lower()
    ext = os.path.splitext(low)[1]
    arch = archive_kind(low)
    if arch:
        return arch
    if ext in DOCUMENT_EXT:
        return DOCUMENT_EXT[ext]
    if ext in RECORD_EXT:
        return RECORD_EXT[ext]
    if ext == ".json":
        return "json"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    return "text"


class _Prefixed(io.RawIOBase):
    """A stream with bytes already read put back in front (for sniffing a pipe or a member)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.rest.read(len(b))
        b[: len(data)] = data
        return len(data)


def whole_bytes(head: bytes, f: BinaryIO, limits: Limits, what: str) -> BinaryIO:
    """A seekable file of a stream: ``f`` itself when it is a regular file, else the bytes read
    into memory up to ``limits.in_memory``."""
    try:
        if f.seekable():
            f.seek(0)
            return f
    except (OSError, ValueError, AttributeError):
        pass
    data = head + _read(f, limits.in_memory + 1 - len(head))
    if len(data) > limits.in_memory:
        raise Skipped(
            f"{what} too big to read inside an archive (over {limits.in_memory >> 20} MiB)"
        )
    return io.BytesIO(data)


def guarded(pieces: Iterator, what: str) -> Iterator:
    """Pieces from a third-party parser; any error it raises becomes ``Skipped``."""
    try:
        yield from pieces
    except Skipped:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # parsers raise their own exception types, many of them
        raise Skipped(f"corrupt {what} ({short(err)})") from None


def stream_documents(
    f: BinaryIO,
    name: str,
    source: str,
    *,
    field: str | None = None,
    limits: Limits | None = None,
    budget=None,
    depth: int = 0,
) -> Iterator[Doc]:
    """The documents of a byte stream named ``name`` (its extension picks the extractor)."""
    limits = limits or Limits()
    head = _read(f, SNIFF)
    kind = sniff_kind(name, head)
    try:
        if kind in ("zip", "tar", "gz", "bz2", "xz", "tar.gz", "tar.bz2", "tar.xz"):
            from cllm.data.archives import archive_documents

            yield from archive_documents(
                kind,
                _Prefixed(head, f),
                name,
                source,
                field=field,
                limits=limits,
                budget=budget,
                depth=depth,
                head=head,
                raw=f,
            )
            return
        if kind in ("pdf", "docx", "epub"):
            from cllm.data.documents import document_pieces

            fobj = whole_bytes(head, f, limits, kind.upper())
            yield Doc(source, kind, document_pieces(kind, fobj))
            return
        if kind in ("jsonl", "csv", "tsv", "parquet", "json"):
            from cllm.data.records import record_doc

            yield record_doc(kind, head, f, name, source, field=field, limits=limits)
            return
        encoding, chunks = decode_stream(f, head)
        kind = file_kind(name, head)
        if kind == "html":
            yield Doc(source, kind, _html_file_pieces(chunks, limits), encoding)
        elif kind == "markdown":
            yield Doc(source, kind, _markdown_file_pieces(chunks, limits), encoding)
        else:
            yield Doc(source, kind, _whole_lines(chunks), encoding)
    except ArchiveRefused:
        raise
    except Skipped as err:
        yield Doc(source, kind, skipped=err.reason)


def iter_documents(
    path: str | Path,
    *,
    source: str | None = None,
    field: str | None = None,
    limits: Limits | None = None,
) -> Iterator[Doc]:
    """The documents of a file, each extracted by its kind. A document that cannot be read comes
    as a ``Doc`` with ``skipped`` set; ``ArchiveRefused`` (now or while iterating) refuses a whole
    archive."""
    path = os.fspath(path)
    source = source or path
    try:
        f = open(path, "rb")
    except OSError as err:
        yield Doc(source, "text", skipped=f"unreadable ({err.strerror or short(err)})")
        return
    with f:
        yield from stream_documents(f, os.path.basename(path), source, field=field, limits=limits)


def iter_file_text(path: str | Path, chunk_size: int = CHUNK) -> tuple[str, Iterator[str]]:
    """(kind, text pieces) of a file, its documents joined; raises ``Skipped`` now or while
    iterating. Records are separated by a blank line."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as err:
        raise Skipped(f"unreadable ({err.strerror or short(err)})") from None
    head = _read(f, SNIFF)
    if sniff_kind(path.name, head) == "text":
        try:
            _, chunks = decode_stream(f, head, chunk_size)
        except Skipped:
            f.close()
            raise
        kind = file_kind(path, head)
        if kind == "html":
            pieces = _html_file_pieces(chunks, Limits())
        elif kind == "markdown":
            pieces = _markdown_file_pieces(chunks, Limits())
        else:
            pieces = _whole_lines(chunks)
        return kind, _closing(f, pieces)
    f.close()
    docs = iter_documents(path)
    first = next(docs, None)
    if first is None:
        raise Skipped("empty")
    if first.skipped:
        raise Skipped(first.skipped)

    def pieces() -> Iterator[str]:
        for i, doc in enumerate(_chain(first, docs)):
            if doc.skipped:
                continue
            if i:
                yield "\n\n"
            for p in doc.pieces:
                yield "\n\n" if p is END_OF_TEXT else p

    return first.kind, pieces()


def _closing(f: BinaryIO, pieces: Iterator[str]) -> Iterator[str]:
    with f:
        yield from pieces


def _chain(first, rest: Iterator) -> Iterator:
    """``first`` (one item, or a list of items) and then ``rest``."""
    yield from first if isinstance(first, list) else [first]
    yield from rest


def extract_file(path: str | Path) -> tuple[str, str]:
    """(text, kind) of a file, or ``Skipped`` with the reason."""
    kind, pieces = iter_file_text(path)
    text = "".join(pieces)
    if not text.strip():
        raise Skipped("empty")
    return text, kind


# ---------------------------------------------------------------------------------------- HTML

SKIP_ALWAYS = {"script", "style", "noscript", "template", "svg", "math", "iframe", "object"}
BOILERPLATE = {"nav", "header", "footer", "aside", "form", "menu", "dialog"}
BLOCK = set(
    "p div h1 h2 h3 h4 h5 h6 li ul ol dl dt dd br hr tr table thead tbody tfoot section article"
    " main pre blockquote figure figcaption address details summary caption title body".split()
)
VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"}


class HTMLText(HTMLParser):
    """An incremental HTML-to-text converter: ``feed`` returns the lines finished so far."""

    def __init__(self, mode: str = "text") -> None:
        if mode not in HTML_MODES:
            raise CLLMError(f"unknown HTML filter {mode!r}; choose from {', '.join(HTML_MODES)}")
        super().__init__(convert_charrefs=True)
        self.mode = mode
        self.skip = SKIP_ALWAYS | (BOILERPLATE if mode in ("text", "mixed") else set())
        self.want_text = mode != "metadata"
        self.want_meta = mode != "text"
        self.stack: list[str] = []  # open skipped elements
        self.in_title = False
        self.title: list[str] = []
        self.pre = 0
        self.line: list[str] = []
        self.out: list[str] = []

    def _break(self) -> None:
        text = "".join(self.line)
        self.line = []
        if self.pre:
            if text.strip():
                self.out.append(text.rstrip("\n"))
        else:
            text = " ".join(text.split())
            if text:
                self.out.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.stack:
            if tag in self.skip and tag not in VOID:
                self.stack.append(tag)
            return
        if tag in self.skip:
            self.stack.append(tag)
            return
        if tag == "title":
            self.in_title = True
            return
        if tag == "meta" and self.want_meta:
            a = {k.lower(): (v or "") for k, v in attrs}
            key = (a.get("name") or a.get("property") or "").lower()
            if (
                key in ("description", "keywords", "og:description")
                and a.get("content", "").strip()
            ):
                self._break()
                self.out.append(" ".join(a["content"].split()))
            return
        if tag == "img" and self.want_text and self.mode == "all":
            alt = dict(attrs).get("alt")
            if alt:
                self.line.append(f" {alt} ")
            return
        if tag in BLOCK:
            self._break()
        if tag == "pre":
            self.pre += 1
        if tag == "td" or tag == "th":
            self.line.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.skip:  # <svg/> and friends: nothing inside to skip
            return
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self.stack:
            if tag in self.stack:  # close up to the matching element (tolerates missing ends)
                while self.stack.pop() != tag:
                    pass
            return
        if tag == "title":
            if self.in_title and self.want_meta:
                title = " ".join("".join(self.title).split())
                if title:
                    self._break()
                    self.out.append(title)
            self.in_title = False
            self.title = []
            return
        if tag in BLOCK:
            self._break()
        if tag == "pre" and self.pre:
            self.pre -= 1

    def handle_data(self, data: str) -> None:
        if self.stack:
            return
        if self.in_title:
            self.title.append(data)
        elif self.want_text:
            self.line.append(data)

    def take(self) -> str:
        lines, self.out = self.out, []
        return "".join(line + "\n" for line in lines)

    def finish(self) -> str:
        self.close()
        self._break()
        return self.take()


def _html_pieces(chunks: Iterator[str], mode: str) -> Iterator[str]:
    """The built-in parser, streamed: for pages too big to hand to the main-content extractor."""
    parser = HTMLText(mode)
    for chunk in chunks:
        parser.feed(chunk)
        text = parser.take()
        if text:
            yield text
    text = parser.finish()
    if text:
        yield text


def _builtin(html: str, mode: str) -> str:
    parser = HTMLText(mode)
    parser.feed(html)
    return parser.finish()


def _trafilatura():
    try:
        import trafilatura
    except ImportError:  # pragma: no cover - a dependency; the built-in parser stands in
        return None
    return trafilatura


def main_text(html: str) -> str:
    """The main content of a page (``trafilatura``): the article without navigation, ads,
    related links, comments and footers. Where it finds none (a page of a few words), the
    built-in parser's text without the boilerplate elements."""
    traf = _trafilatura()
    if traf is not None and html.strip():
        try:
            text = traf.extract(
                html,
                fast=True,  # no fallback extractors: they bring the navigation back
                favor_precision=True,
                include_comments=False,
                include_tables=True,
            )
        except Exception:  # a parser's own error on odd markup: the built-in parser copes
            text = None
        if text and text.strip():
            lines = [line.replace("\xa0", " ").rstrip() for line in text.splitlines()]
            return "".join(line + "\n" for line in lines if line.strip())
    return _builtin(html, "text")


def metadata_lines(html: str) -> list[str]:
    """Title, author, description and keywords of a page, those it has, one line each."""
    traf = _trafilatura()
    lines: list[str] = []
    if traf is not None and html.strip():
        try:
            m = traf.extract_metadata(html)
        except Exception:
            m = None
        if m is not None:
            tags = ", ".join(t for t in (m.tags or []) if t)
            for value in (m.title, m.author, m.description, tags):
                value = " ".join((value or "").split())
                if value and value not in lines:
                    lines.append(value)
    return lines or _builtin(html, "metadata").splitlines()


def extract_html(html: str, mode: str = "text") -> str:
    """Readable text of an HTML document by filter: ``all``, ``text``, ``metadata``, ``mixed``."""
    if mode not in HTML_MODES:
        raise CLLMError(f"unknown HTML filter {mode!r}; choose from {', '.join(HTML_MODES)}")
    if mode == "all":
        return _builtin(html, "all")
    text = main_text(html) if mode != "metadata" else ""
    meta = "".join(line + "\n" for line in metadata_lines(html)) if mode != "text" else ""
    return meta + text


def _held(chunks: Iterator[str], limit: int) -> tuple[list[str], bool]:
    """Chunks read until more than ``limit`` characters are held; (chunks, more to come)."""
    held, n = [], 0
    for c in chunks:
        held.append(c)
        n += len(c)
        if n > limit:
            return held, True
    return held, False


def _html_file_pieces(chunks: Iterator[str], limits: Limits) -> Iterator[str]:
    held, more = _held(chunks, limits.in_memory)
    if more:  # too big for the main-content extractor: the built-in parser, streamed
        yield from _html_pieces(_chain(held, chunks), "text")
        return
    text = main_text("".join(held))
    if text:
        yield text


# ------------------------------------------------------------------------------------ Markdown


def _md_inline(children) -> str:
    out = []
    for t in children:
        if t.type in ("text", "code_inline"):
            out.append(t.content)
        elif t.type in ("softbreak", "hardbreak"):
            out.append("\n")
        elif t.type == "image":
            out.append(t.content)  # its alt text
    return "".join(out)


def markdown_text(src: str) -> str:
    """Markdown rendered to plain text (``markdown-it-py``): markup gone, one line per paragraph
    line, a blank line between top-level blocks, code blocks kept verbatim, table rows as
    tab-separated cells."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    out: list[str] = []
    row: list[str] | None = None
    for tok in md.parse(src):
        t = tok.type
        if t == "inline":
            text = _md_inline(tok.children or [])
            if row is not None:
                row.append(text)
            elif text.strip():
                out.append(text + "\n")
        elif t in ("fence", "code_block"):
            code = tok.content
            out.append(code if code.endswith("\n") or not code else code + "\n")
            if tok.level == 0:
                out.append("\n")
        elif t == "html_block":
            out.append(_builtin(tok.content, "text"))
        elif t == "tr_open":
            row = []
        elif t == "tr_close":
            out.append("\t".join(row or []) + "\n")
            row = None
        elif tok.nesting == -1 and tok.level == 0 and t != "tr_close":
            out.append("\n")  # the end of a top-level block
    text = "".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip("\n") + "\n" if text.strip() else ""


def extract_markdown(markdown: str) -> str:
    """Readable text of a Markdown document: markup stripped, code blocks kept as text."""
    return markdown_text(markdown)


def _markdown_file_pieces(chunks: Iterator[str], limits: Limits) -> Iterator[str]:
    held, more = _held(chunks, limits.in_memory)
    if not more:
        text = markdown_text("".join(held))
        if text:
            yield text
        return
    for piece in _whole_lines(_chain(held, chunks)):  # huge: rendered a piece at a time
        text = markdown_text(piece)
        if text:
            yield text
