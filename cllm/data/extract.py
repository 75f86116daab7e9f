"""Text from files: plain text and source code as is, HTML and Markdown to readable text.

Files are read in chunks (1 MiB by default) and turned into text chunk by chunk, so a file of any
size is never held whole; ``iter_file_text`` yields the pieces and ``extract_file`` joins them.
Files that hold no text are refused with ``Skipped``, whose ``reason`` is a short word or phrase:
``binary``, ``empty``, ``undecodable ...``, ``unreadable ...``.

HTML filters (``extract_html`` and the crawler):
- ``text``: the visible text of the page, without scripts, styles and navigation boilerplate
  (nav, header, footer, aside, forms);
- ``metadata``: the title, the description and the keywords, one per line;
- ``mixed``: the metadata lines, then the text;
- ``all``: the metadata and every text node, boilerplate included (scripts and styles are code,
  not text, and stay out).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from cllm.errors import CLLMError

CHUNK = 1 << 20
SNIFF = 8192
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


class Skipped(CLLMError):
    """A file that holds no text to learn from; ``reason`` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def file_kind(path: Path, head: bytes = b"") -> str:
    """``html``, ``markdown``, ``code`` or ``text``, by extension, then by a look at the start."""
    ext, name = path.suffix.lower(), path.name.lower()
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


def is_binary(head: bytes) -> bool:
    """NUL bytes, or many control bytes, in the first bytes of a file mean it is not text."""
    if not head:
        return False
    if b"\0" in head:
        return True
    # Tab, newline, vertical tab, form feed, carriage return and escape occur in real text.
    controls = sum(head.count(bytes([c])) for c in range(32) if c not in (9, 10, 11, 12, 13, 27))
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
    return "utf-8", 0


def _decoded_chunks(path: Path, chunk_size: int) -> tuple[str, Iterator[str]]:
    """Open a file, refuse it early if it is empty or binary; return its kind and its text."""
    try:
        f = open(path, "rb")
    except OSError as err:
        raise Skipped(f"unreadable ({err.strerror or err})") from None
    try:
        head = f.read(SNIFF)
    except OSError as err:
        f.close()
        raise Skipped(f"unreadable ({err.strerror or err})") from None
    if not head:
        f.close()
        raise Skipped("empty")
    codec, bom = _decoder_for(head)
    if bom == 0 and is_binary(head):  # UTF-16/32 text is full of NULs: only sniff without a BOM
        f.close()
        raise Skipped("binary")

    def chunks() -> Iterator[str]:
        dec = codecs.getincrementaldecoder(codec)("strict")
        with f:
            data, offset = head[bom:], bom
            while True:
                try:
                    text = dec.decode(data, final=not data)
                except UnicodeDecodeError as err:
                    where = offset + err.start
                    raise Skipped(
                        f"undecodable (not {codec.upper()} text at byte {where})"
                    ) from None
                if text:
                    yield text
                if not data:
                    return
                offset += len(data)
                try:
                    data = f.read(chunk_size)
                except OSError as err:
                    raise Skipped(f"unreadable ({err.strerror or err})") from None

    return file_kind(path, head), chunks()


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


def iter_file_text(path: str | Path, chunk_size: int = CHUNK) -> tuple[str, Iterator[str]]:
    """(kind, text pieces) of a file; raises ``Skipped`` now or while iterating."""
    kind, chunks = _decoded_chunks(Path(path), chunk_size)
    if kind == "html":
        return kind, _html_pieces(chunks, "text")
    if kind == "markdown":
        return kind, _markdown_pieces(_whole_lines(chunks))
    return kind, _whole_lines(chunks)


class _EndOfText:
    """The separator between the records of a data file, in a stream of text pieces."""

    def __repr__(self) -> str:
        return "END_OF_TEXT"


END_OF_TEXT = _EndOfText()


@dataclass
class Doc:
    """One document of a file (an archive holds many): its text pieces (``END_OF_TEXT`` between
    records), made lazily, or the reason it is skipped."""

    source: str
    kind: str
    pieces: Iterator = field(default_factory=lambda: iter(()))
    encoding: str = ""
    skipped: str = ""


def iter_documents(
    path: str | Path, *, source: str | None = None, field: str | None = None
) -> Iterator[Doc]:
    """The documents of a file, each extracted by its kind. Raises ``Skipped`` (now or while
    iterating) when the whole file is refused."""
    path = Path(path)
    source = source or str(path)
    kind, pieces = iter_file_text(path)
    yield Doc(source, kind, pieces)


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
    parser = HTMLText(mode)
    for chunk in chunks:
        parser.feed(chunk)
        text = parser.take()
        if text:
            yield text
    text = parser.finish()
    if text:
        yield text


def extract_html(html: str, mode: str = "text") -> str:
    """Readable text of an HTML document by filter: ``all``, ``text``, ``metadata``, ``mixed``."""
    parser = HTMLText(mode)
    parser.feed(html)
    return parser.finish()


# ------------------------------------------------------------------------------------ Markdown

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:\s+|$)")
_RULE = re.compile(r"^ {0,3}(?:(?:-\s*){3,}|(?:\*\s*){3,}|(?:_\s*){3,}|=+\s*)$")
_REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S+")
_QUOTE = re.compile(r"^ {0,3}(?:>\s?)+")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?:\[[ xX]\]\s+)?")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$")
_INLINE = [
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # image -> alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # link -> its text
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # reference link -> its text
    (re.compile(r"<((?:https?|mailto):[^>\s]+)>"), r"\1"),  # autolink -> the address
    (re.compile(r"`+([^`]+?)`+"), r"\1"),  # inline code -> the code
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # strong
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # emphasis with *
    (re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)"), r"\1"),  # emphasis with _ (not snake_case)
    (re.compile(r"~~(.+?)~~"), r"\1"),  # strikethrough
]


def _markdown_inline(line: str) -> str:
    for pattern, repl in _INLINE:
        line = pattern.sub(repl, line)
    return line


def _markdown_pieces(pieces: Iterator[str]) -> Iterator[str]:
    fence = ""  # the open code fence, if any: its lines are kept verbatim
    for piece in pieces:
        out = []
        for line in piece.splitlines(keepends=True):
            m = _FENCE.match(line)
            if fence:
                if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                    fence = ""
                else:
                    out.append(line)
                continue
            if m:
                fence = m.group(1)
                continue
            end = "\n" if line.endswith("\n") else ""
            body = line.rstrip("\r\n")
            if _RULE.match(body) or _REFDEF.match(body) or _TABLE_SEP.match(body):
                continue
            body = _QUOTE.sub("", body)
            if _HEADING.match(body):  # "## Title ##" -> "Title"
                body = _HEADING.sub("", body).rstrip().rstrip("#").rstrip()
            body = _BULLET.sub(r"\1", body)
            out.append(_markdown_inline(body) + end)
        if out:
            yield "".join(out)


def extract_markdown(markdown: str) -> str:
    """Readable text of a Markdown document: markup stripped, code blocks kept as text."""
    return "".join(_markdown_pieces(_whole_lines(iter([markdown]))))
