"""PDF, DOCX and EPUB to text, through the libraries made for each (``pypdf``, ``python-docx``,
``ebooklib``). Each gives its text as pieces, made lazily; a corrupt, encrypted or image-only
document is refused with ``Skipped`` and a one-line reason."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from cllm.data.extract import Skipped, guarded, main_text, short


def document_pieces(kind: str, f: BinaryIO) -> Iterator[str]:
    """The text of a ``pdf``, ``docx`` or ``epub`` held in the seekable file ``f``."""
    opener = {"pdf": _pdf, "docx": _docx, "epub": _epub}[kind]
    return guarded(opener(f), kind.upper())


def _pdf(f: BinaryIO) -> Iterator[str]:
    """Each page's text in reading order, pages separated by a blank line."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(f)
        encrypted = reader.is_encrypted
    except Exception as err:  # pypdf raises many types on a damaged file
        raise Skipped(f"corrupt PDF ({short(err)})") from None
    if encrypted:
        try:
            opened = reader.decrypt("")  # many "protected" PDFs open with an empty password
        except Exception:
            opened = 0
        if not opened:
            raise Skipped("encrypted PDF (it needs a password)")
    found = False
    for page in reader.pages:
        text = page.extract_text() or ""
        if text.strip():
            found = True
            yield text.rstrip() + "\n\n"
    if not found:
        raise Skipped("PDF without a text layer (scanned images need OCR)")


def pdf_page_count(f: BinaryIO) -> int:
    from pypdf import PdfReader

    return len(PdfReader(f).pages)


def _docx(f: BinaryIO) -> Iterator[str]:
    """Paragraphs and tables in document order; a table row is its cells separated by tabs."""
    import docx
    from docx.table import Table

    try:
        document = docx.Document(f)
    except Exception as err:
        raise Skipped(f"corrupt DOCX ({short(err)})") from None
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:  # a merged cell repeats: keep it once
                    text = " ".join(cell.text.split())
                    if not cells or cells[-1] != text:
                        cells.append(text)
                yield "\t".join(cells) + "\n"
            yield "\n"
        else:
            yield block.text + "\n"


def _epub(f: BinaryIO) -> Iterator[str]:
    """The chapters in spine order, each through the HTML extraction."""
    import ebooklib
    from ebooklib import epub

    try:
        book = epub.read_epub(f, options={"ignore_ncx": True})
    except Exception as err:
        raise Skipped(f"corrupt EPUB ({short(err)})") from None
    for idref, _linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        html = item.get_content().decode("utf-8", errors="replace")
        text = main_text(html)
        if text.strip():
            yield text + "\n"
