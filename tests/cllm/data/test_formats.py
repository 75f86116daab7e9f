"""Issue 11: documents, data files, archives and encodings through one extraction layer, and
each bad input skipped with a one-line reason while the rest goes in."""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.data.dataqueue import DataQueue
from cllm.data.extract import Limits, extract_html, iter_documents
from cllm.engine.tokenizer import ByteTokenizer
from tests.cllm.data.fixtures import (
    ARTICLE,
    encrypted_pdf,
    make_docx,
    make_epub,
    pdf_bytes,
    scanned_pdf,
)


@pytest.fixture
def q(tmp_path):
    with DataQueue(tmp_path / "m_queue", ByteTokenizer()) as queue:
        yield queue


def added(r) -> dict[str, str]:
    return {Path(it.source.split("!")[-1]).name: it.kind for it in r.added}


def reasons(r) -> dict[str, str]:
    return {Path(s.split("!")[-1]).name: why for s, why in r.skipped}


def texts(q) -> dict[str, str]:
    return {Path(it.source.split("!")[-1]).name: q.text(it.id) for it in q.items()}


# ------------------------------------------------------------------------------- documents


def test_pdf_docx_epub_give_their_text(q, tmp_path):
    (tmp_path / "a.pdf").write_bytes(pdf_bytes(["Hello PDF world\nsecond line", "Page two"]))
    make_docx(tmp_path / "b.docx")
    make_epub(tmp_path / "c.epub")
    r = q.add_folder(tmp_path)
    assert added(r) == {"a.pdf": "pdf", "b.docx": "docx", "c.epub": "epub"} and not r.skipped
    t = texts(q)
    assert t["a.pdf"] == "Hello PDF world\nsecond line\n\nPage two\n\n"  # pages in order
    assert t["b.docx"].splitlines() == [
        "Quarterly notes",
        "The lattice grew by four percent.",
        "mineral\thardness",  # a table row: its cells
        "quartz\t7",
        "",
        "Closing paragraph after the table.",
    ]
    book = t["c.epub"]  # chapters in spine order, markup gone
    assert book.index("selenite") < book.index("two miners") and "<p>" not in book


def test_bad_documents_are_skipped_with_reasons_and_the_rest_goes_in(q, tmp_path):
    encrypted_pdf(tmp_path / "locked.pdf")
    scanned_pdf(tmp_path / "scan.pdf")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog garbage")
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not a real zip")
    (tmp_path / "broken.epub").write_bytes(b"this is no book")
    (tmp_path / "good.txt").write_text("still here\n")
    r = q.add_folder(tmp_path)
    assert added(r) == {"good.txt": "text"}
    why = reasons(r)
    assert why["locked.pdf"] == "encrypted PDF (it needs a password)"
    assert why["scan.pdf"] == "PDF without a text layer (scanned images need OCR)"
    assert why["broken.pdf"].startswith("corrupt PDF (")
    assert why["broken.docx"].startswith("corrupt DOCX (")
    assert why["broken.epub"].startswith("corrupt EPUB (")
    assert all("\n" not in w for w in why.values())
    assert not list(q.items_dir.glob("*.part"))


def test_a_pdf_without_its_extension_is_still_a_pdf(q, tmp_path):
    (tmp_path / "report").write_bytes(pdf_bytes(["Only ASCII text here"]))
    r = q.add_file(tmp_path / "report")
    assert r.added[0].kind == "pdf" and q.text(r.added[0].id) == "Only ASCII text here\n\n"


# ------------------------------------------------------------------------------------ HTML


def test_article_page_gives_the_article_not_the_boilerplate():
    text = extract_html(ARTICLE, "text")
    assert "Table salt is sodium chloride." in text and "octahedra" in text
    for junk in (
        "Subscribe now",
        "ADVERTISEMENT",
        "Related stories",
        "Sponsored",
        "Great article",
        "Copyright 2026",
        "Privacy policy",
    ):
        assert junk not in text, junk
    meta = extract_html(ARTICLE, "metadata").splitlines()
    assert meta == [
        "How salt crystals grow",
        "Ada Quartz",
        "A chemist explains why table salt forms cubes.",
        "salt, crystals, chemistry",
    ]
    assert extract_html(ARTICLE, "mixed") == "".join(m + "\n" for m in meta) + text
    assert "Subscribe now" in extract_html(ARTICLE, "all")  # "all" keeps every text node


def test_html_file_is_the_article(q, tmp_path):
    (tmp_path / "page.html").write_text(ARTICLE)
    item = q.add_file(tmp_path / "page.html").added[0]
    assert item.kind == "html" and q.text(item.id) == extract_html(ARTICLE, "text")


# -------------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    "text, codec, expect",
    [
        ("Le café est très bon, même à Noël. Ça coûte cher, l'été.\n" * 3, "latin-1", "cp1252"),
        ("“Smart quotes” — and a euro sign € in cp1252 text.\n" * 3, "cp1252", "cp1252"),
        (
            "日本語のテキストです。これはテストです。東京は大きい都市です。\n" * 3,
            "shift_jis",
            "cp932",
        ),
    ],
)
def test_legacy_encodings_are_detected_and_recorded(q, tmp_path, text, codec, expect):
    (tmp_path / "f.txt").write_bytes(text.encode(codec))
    item = q.add_file(tmp_path / "f.txt").added[0]
    assert q.text(item.id) == text
    assert codecs.lookup(item.encoding) == codecs.lookup(expect)
    assert q.item(item.id).encoding == item.encoding  # stored on the item


@pytest.mark.parametrize(
    "bom, codec",
    [
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
    ],
)
def test_unicode_with_a_byte_order_mark(q, tmp_path, bom, codec):
    text = "héllo wörld ✓ 𝄞\nline two\n"
    (tmp_path / "u.txt").write_bytes(bom + text.encode(codec))
    item = q.add_file(tmp_path / "u.txt").added[0]
    assert q.text(item.id) == text and item.encoding == codecs.lookup(codec).name


# ---------------------------------------------------------------------------------- records


def _records(q, item) -> list[str]:
    ids = q.tokens(item.id)
    cuts = np.flatnonzero(ids == q.tokenizer.eot_id)
    parts = np.split(ids, cuts)
    return [q.tokenizer.decode(p[p != q.tokenizer.eot_id]) for p in parts]


def test_jsonl_csv_tsv_json_take_one_field_per_record(q, tmp_path):
    (tmp_path / "a.jsonl").write_text(
        '{"id": 1, "text": "first record"}\n{"id": 2, "text": "second"}\n'
        "{broken json\n"
        '{"id": 3, "text": "third, after the broken line"}\n'
    )
    (tmp_path / "b.csv").write_text(
        'id,content,extra\n1,"a, quoted ""cell""",x\n2,ragged row\n3,"multi\nline",y\n'
    )
    (tmp_path / "c.tsv").write_text("body\tn\nalpha\t1\nbeta\t2\n")
    (tmp_path / "d.json").write_text(json.dumps([{"body": "one"}, {"body": "two"}, {"x": 1}]))
    (tmp_path / "e.json").write_text('{"setting": true}\n')  # not records: code, as written
    r = q.add_folder(tmp_path)
    assert added(r) == {
        "a.jsonl": "jsonl",
        "b.csv": "csv",
        "c.tsv": "tsv",
        "d.json": "json",
        "e.json": "code",
    }
    items = {Path(it.source).name: it for it in r.added}
    assert _records(q, items["a.jsonl"]) == [
        "first record",
        "second",
        "third, after the broken line",
    ]
    assert _records(q, items["b.csv"]) == ['a, quoted "cell"', "multi\nline"]
    assert _records(q, items["c.tsv"]) == ["alpha", "beta"]
    assert _records(q, items["d.json"]) == ["one", "two"]
    notes = {Path(s).name: n for s, n in r.notes}
    assert notes["a.jsonl"] == "1 broken line(s) skipped (the first at line 3)"
    assert notes["b.csv"] == "1 ragged row(s) skipped (the first at line 3)"
    assert notes["d.json"] == "1 record(s) without the field skipped (the first at record 3)"


def test_field_by_name_and_a_missing_field_lists_the_columns(q, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"title": "t1", "summary": "s1"}\n')
    (tmp_path / "b.csv").write_text("title,summary\nt2,s2\n")
    r = q.add_folder(tmp_path)
    assert not r.added
    assert reasons(r) == {
        "a.jsonl": "no text field: name one with --field (fields: title, summary)",
        "b.csv": "no text field: name one with --field (fields: title, summary)",
    }
    r = q.add_folder(tmp_path, field="summary")
    assert sorted(q.text(it.id) for it in r.added) == ["s1", "s2"]
    assert reasons(q.add_file(tmp_path / "b.csv", field="nope")) == {
        "b.csv": "no field 'nope' (fields: title, summary)"
    }


def test_parquet(q, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2, 3], "text": ["alpha doc", None, "gamma doc"]})
    pq.write_table(table, tmp_path / "d.parquet")
    item = q.add_file(tmp_path / "d.parquet").added[0]
    assert item.kind == "parquet" and _records(q, item) == ["alpha doc", "gamma doc"]


# --------------------------------------------------------------------------------- archives


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


def _tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> None:
    with tarfile.open(path, mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_archives_are_expanded_member_by_member(q, tmp_path):
    members = {
        "docs/readme.md": b"# Read me\n\nSome **markdown**.\n",
        "docs/report.pdf": pdf_bytes(["Zipped PDF text"]),
        "notes.txt": b"plain notes\n",
        "image.bin": bytes(range(256)) * 4,
    }
    _zip(tmp_path / "a.zip", members)
    _tar(tmp_path / "b.tar.gz", {k.replace("docs/", "t/"): v for k, v in members.items()})
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(b"gzipped text\n"))
    (tmp_path / "d.jsonl.bz2").write_bytes(bz2.compress(b'{"text": "bz2 record"}\n'))
    (tmp_path / "e.md.xz").write_bytes(lzma.compress(b"*xz* markdown\n"))
    r = q.add_folder(tmp_path)
    sources = sorted(it.source.replace(str(tmp_path) + "/", "") for it in r.added)
    assert sources == [
        "a.zip!docs/readme.md",
        "a.zip!docs/report.pdf",
        "a.zip!notes.txt",
        "c.txt.gz",
        "d.jsonl.bz2",
        "e.md.xz",  # the member of a compressed file is the file
    ]  # the tar's members are the zip's, byte for byte: duplicates
    assert {s.split("!")[-1] for s, w in r.skipped if w == "duplicate"} == {
        "t/readme.md",
        "t/report.pdf",
        "notes.txt",
    }
    assert reasons(r)["image.bin"] == "binary"
    t = texts(q)
    assert t["readme.md"] == "Read me\n\nSome markdown.\n"
    assert t["report.pdf"] == "Zipped PDF text\n\n"
    assert t["c.txt.gz"] == "gzipped text\n" and t["d.jsonl.bz2"] == "bz2 record"
    assert t["e.md.xz"] == "xz markdown\n"


def test_archive_bombs_and_escaping_paths_are_refused_whole(q, tmp_path):
    q.limits = Limits(archive_bytes=1 << 20, archive_members=50)
    # a late bomb: two good members first, then one that expands past the cap
    _zip(
        tmp_path / "bomb.zip",
        {"a.txt": b"fine a\n", "b.txt": b"fine b\n", "c.txt": b"x" * (2 << 20)},
    )
    (tmp_path / "bomb.txt.gz").write_bytes(gzip.compress(b"y\n" * (1 << 20)))
    _zip(tmp_path / "many.zip", {f"m{i}.txt": f"member {i}\n".encode() for i in range(60)})
    _tar(tmp_path / "escape.tar", {"ok.txt": b"fine\n", "../../etc/evil.txt": b"evil\n"}, "w")
    _zip(tmp_path / "abs.zip", {"/etc/passwd.txt": b"root\n"})
    (tmp_path / "corrupt.tar.gz").write_bytes(gzip.compress(b"not a tar at all " * 100)[:60])
    (tmp_path / "keep.txt").write_text("the rest still goes in\n")
    r = q.add_folder(tmp_path)
    assert added(r) == {"keep.txt": "text"}
    why = reasons(r)
    assert why["bomb.zip"] == "archive expands past 1 MiB: refused as a possible archive bomb"
    assert why["bomb.txt.gz"] == why["bomb.zip"]
    assert (
        why["many.zip"] == "archive holds more than 50 members: refused as a possible archive bomb"
    )
    assert why["escape.tar"] == "unsafe path in archive: ../../etc/evil.txt"
    assert why["abs.zip"] == "unsafe path in archive: /etc/passwd.txt"
    assert why["corrupt.tar.gz"].startswith("corrupt")
    assert q.size()[0] == 1 and not list(q.items_dir.iterdir())  # nothing half-added


def test_a_big_member_is_streamed_not_held(q, tmp_path):
    line = b"All work and no play makes Jack a dull boy.\n"
    with gzip.open(tmp_path / "big.txt.gz", "wb") as f:
        for _ in range(200):
            f.write(line * 1000)
    item = q.add_file(tmp_path / "big.txt.gz").added[0]
    assert item.n_tokens == 200 * 1000 * len(line)
    assert (q.items_dir / f"{item.sha256[:16]}.tok").stat().st_size == 4 * item.n_tokens


# ------------------------------------------------------------------------------------ stdin


def test_a_stream_is_sniffed_like_a_file(q):
    r = q.add_stream(io.BytesIO("Grüße aus Köln, schöne Grüße!\n".encode("latin-1") * 3))
    item = r.added[0]
    assert item.source == "<stdin>" and q.text(item.id) == "Grüße aus Köln, schöne Grüße!\n" * 3
    pdf = q.add_stream(io.BytesIO(pdf_bytes(["Piped PDF"])), source="<stdin>")
    assert pdf.added[0].kind == "pdf" and q.text(pdf.added[0].id) == "Piped PDF\n\n"


def test_documents_of_one_file(tmp_path):
    _zip(tmp_path / "a.zip", {"x.txt": b"ex\n", "y.md": b"# why\n"})
    docs = list(iter_documents(tmp_path / "a.zip"))
    assert [(d.source.split("!")[1], d.kind) for d in docs] == [
        ("x.txt", "text"),
        ("y.md", "markdown"),
    ]


# ------------------------------------------------------------------------- hostile bytes


def _valid_files() -> dict[str, bytes]:
    zbuf, tbuf = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", "zipped text\n" * 20)
        z.writestr("b.md", "# title\n\nbody\n")
    with tarfile.open(fileobj=tbuf, mode="w:gz") as t:
        data = b"tarred text\n" * 20
        info = tarfile.TarInfo("a.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return {
        "x.zip": zbuf.getvalue(),
        "x.tar.gz": tbuf.getvalue(),
        "x.txt.gz": gzip.compress(b"gzipped text\n" * 20),
        "x.pdf": pdf_bytes(["some pdf text", "more"]),
        "x.jsonl": b'{"text": "a"}\n{"text": "b"}\n',
        "x.csv": b"id,text\n1,a\n2,b\n",
        "x.json": b'[{"text": "a"}]',
        "x.html": ARTICLE.encode(),
    }


VALID = _valid_files()


@settings(max_examples=120, deadline=None)
@given(
    name=st.sampled_from(sorted(VALID)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.floats(0, 1),
)
def test_damaged_files_of_every_kind_are_added_or_skipped_never_crash(name, flips, cut):
    import tempfile

    data = bytearray(VALID[name])
    for where, byte in flips:
        data[int(where * len(data))] = byte
    if cut is not None:
        data = data[: int(cut * len(data))]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(bytes(data))
        with DataQueue(Path(d) / "m_queue", ByteTokenizer()) as q:
            q.limits = Limits(archive_bytes=1 << 20, archive_members=100)
            r = q.add_file(path)
            assert r.added or r.skipped
            for _source, why in r.skipped:
                assert why and "\n" not in why
            for it in r.added:
                assert q.tokens(it.id).size == it.n_tokens
            assert not list(q.items_dir.glob("*.part"))
