"""Fixture files made at test time: PDF, DOCX, EPUB, an HTML article with boilerplate, archives.
Nothing is downloaded."""

from __future__ import annotations

import io
from pathlib import Path


def pdf_bytes(pages: list[str]) -> bytes:
    """A minimal PDF whose pages show ``pages`` in Helvetica: a real text layer."""
    objs: list[bytes] = []
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        lines = text.split("\n")
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({esc}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for k, body in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % k + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    )
    return out.getvalue()


def encrypted_pdf(path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["secret words"]))))
    writer.encrypt(user_password="hunter2", algorithm="RC4-128")
    with open(path, "wb") as f:
        writer.write(f)


def scanned_pdf(path: Path) -> None:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)  # a page with no text: as a scan without OCR
    with open(path, "wb") as f:
        writer.write(f)


def make_docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Quarterly notes", level=1)
    d.add_paragraph("The lattice grew by four percent.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "mineral", "hardness"
    table.cell(1, 0).text, table.cell(1, 1).text = "quartz", "7"
    d.add_paragraph("Closing paragraph after the table.")
    d.save(str(path))


def make_epub(path: Path) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("cllm-test-book")
    book.set_title("Crystals")
    book.set_language("en")
    chapters = []
    for i, (title, body) in enumerate(
        [
            ("First light", "The first chapter tells how the cave was found by two miners."),
            ("Deep halls", "The second chapter walks through halls of selenite crystals."),
        ],
        1,
    ):
        c = epub.EpubHtml(title=title, file_name=f"ch{i}.xhtml", lang="en")
        c.content = f"<html><body><h1>{title}</h1><p>{body}</p></body></html>"
        book.add_item(c)
        chapters.append(c)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", chapters[1], chapters[0]]  # spine order differs from file order
    epub.write_epub(str(path), book)


ARTICLE = """<!DOCTYPE html><html lang="en"><head>
<title>How salt crystals grow | The Daily Lattice</title>
<meta name="description" content="A chemist explains why table salt forms cubes.">
<meta name="keywords" content="salt, crystals, chemistry">
<meta name="author" content="Ada Quartz">
<script>window.ads = [];</script><style>.ad{color:red}</style></head>
<body>
<header class="site-header"><a href="/">The Daily Lattice</a>
<nav class="menu"><ul><li><a href="/news">News</a></li><li><a href="/science">Science</a></li>
<li><a href="/subscribe">Subscribe now</a></li></ul></nav></header>
<div class="ad banner">ADVERTISEMENT: Buy cheap crystals today! Limited offer!</div>
<main><article>
<h1>How salt crystals grow</h1>
<p class="byline">By Ada Quartz</p>
<p>Table salt is sodium chloride. When a salty solution evaporates slowly, the sodium and chloride
ions settle into a cubic lattice, and the crystals that form are tiny cubes that you can see with
a simple magnifying glass.</p>
<p>The shape of the crystal follows the shape of the lattice. Each ion sits at the corner of a cube,
surrounded by six ions of the other kind, which is why salt crystals have <b>flat faces</b> and
sharp right angles.</p>
<aside class="related"><h3>Related stories</h3><ul><li><a href="/a">Why snow is white</a></li>
<li><a href="/b">Ten facts about quartz</a></li></ul></aside>
<p>To grow a large crystal at home, dissolve as much salt as the water will take, hang a thread in
the jar, and wait. Over a week or two, a single crystal can grow to the size of a fingernail.</p>
<p>Impurities change the result: a little urea in the water makes salt grow as octahedra instead of
cubes, a trick crystal growers have known for a century.</p>
</article></main>
<div class="ad sidebar-ad">Sponsored: The best crystal kits of 2026</div>
<section id="comments" class="comments"><h2>Comments</h2>
<div class="comment"><p>Great article, I tried this with my kids!</p></div>
<div class="comment"><p>First! Check out my blog for free crystals.</p></div></section>
<footer><p>Copyright 2026 The Daily Lattice. All rights reserved.</p>
<a href="/privacy">Privacy policy</a></footer>
</body></html>"""
