"""Data files: JSONL, JSON arrays, CSV/TSV and Parquet. The text of one field of each record
goes in, records separated by ``END_OF_TEXT`` (the end-of-text token once tokenized).

The field is the one named (``--field``), or the first of ``text``, ``content`` and ``body`` the
file has; a file without it is refused with its field names listed. A broken JSONL line or a
ragged CSV row is skipped and counted in the document's notes; the rest goes in.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import BinaryIO

from cllm.data.extract import (
    END_OF_TEXT,
    Doc,
    Limits,
    Skipped,
    _joined,
    decode_stream,
    guarded,
    short,
    whole_bytes,
)

AUTO_FIELDS = ("text", "content", "body")


def choose_field(names: list[str], field: str | None) -> str:
    if field is not None:
        if field in names:
            return field
        raise Skipped(f"no field {field!r} (fields: {', '.join(names) or 'none'})")
    for want in AUTO_FIELDS:
        for name in names:
            if name.lower() == want:
                return name
    raise Skipped(f"no text field: name one with --field (fields: {', '.join(names) or 'none'})")


def _value(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float, bool)):
        return str(v)
    return json.dumps(v, ensure_ascii=False)


def _lines(chunks: Iterator[str]) -> Iterator[str]:
    """Lines with their ends (a quoted CSV cell may span lines)."""
    carry = ""
    for c in chunks:
        c = carry + c
        parts = c.split("\n")
        carry = parts.pop()
        for part in parts:
            yield part + "\n"
    if carry:
        yield carry


class _Count:
    """Dropped records of a document: a count and where the first one was."""

    def __init__(self, doc: Doc, what: str) -> None:
        self.doc, self.what, self.n, self.first = doc, what, 0, 0

    def add(self, where: int) -> None:
        self.n += 1
        self.first = self.first or where

    def close(self, where_word: str) -> None:
        if self.n:
            self.doc.notes.append(
                f"{self.n} {self.what} skipped (the first at {where_word} {self.first})"
            )


def _emit(texts: Iterator[str | None]) -> Iterator:
    first = True
    for t in texts:
        if t is None or not t.strip():
            continue
        if not first:
            yield END_OF_TEXT
        first = False
        yield t


def _jsonl(doc: Doc, chunks: Iterator[str], field: str | None) -> Iterator:
    broken = _Count(doc, "broken line(s)")
    missing = _Count(doc, "record(s) without the field")
    chosen: str | None = None

    def texts() -> Iterator[str | None]:
        nonlocal chosen
        for no, line in enumerate(_lines(chunks), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                broken.add(no)
                continue
            if isinstance(rec, str) and field is None:
                yield rec
                continue
            if not isinstance(rec, dict):
                broken.add(no)
                continue
            if chosen is None:
                chosen = choose_field(list(rec), field)
            if chosen not in rec:
                missing.add(no)
                continue
            yield _value(rec[chosen])
        broken.close("line")
        missing.close("line")
        if chosen is None and broken.n:
            raise Skipped(f"no valid JSON line ({broken.n} broken)")

    return _emit(texts())


def _csv(doc: Doc, chunks: Iterator[str], field: str | None, delimiter: str) -> Iterator:
    ragged = _Count(doc, "ragged row(s)")

    def texts() -> Iterator[str | None]:
        reader = csv.reader(_lines(chunks), delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                raise Skipped("empty")
            col = header.index(choose_field(header, field))
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    ragged.add(reader.line_num)
                    continue
                yield row[col]
        except csv.Error as err:
            where = reader.line_num
            raise Skipped(f"corrupt {doc.kind.upper()} at line {where} ({short(err)})") from None
        ragged.close("line")

    return _emit(texts())


def _json(doc: Doc, chunks: Iterator[str], field: str | None, limits: Limits) -> Iterator:
    text = _joined(chunks, limits.in_memory, "JSON file")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise Skipped(f"corrupt JSON ({short(err)})") from None
    if not isinstance(data, list):  # a settings file, not a list of records: code, as written
        doc.kind = "code"
        return iter([text])
    names = next((list(r) for r in data if isinstance(r, dict)), [])
    chosen = choose_field(names, field) if names else None
    skipped = _Count(doc, "record(s) without the field")
    texts = []
    for i, rec in enumerate(data, 1):
        if isinstance(rec, str) and field is None:
            texts.append(rec)
        elif isinstance(rec, dict) and chosen in rec:
            texts.append(_value(rec[chosen]))
        else:
            skipped.add(i)
    skipped.close("record")
    return _emit(iter(texts))


def _parquet(f: BinaryIO, field: str | None) -> Iterator:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise Skipped("Parquet needs pyarrow: pip install 'crystalline-cllm[parquet]'") from None
    try:
        pf = pq.ParquetFile(f)
        names = list(pf.schema_arrow.names)
    except Exception as err:
        raise Skipped(f"corrupt Parquet ({short(err)})") from None
    chosen = choose_field(names, field)

    def texts() -> Iterator[str | None]:
        for batch in pf.iter_batches(columns=[chosen], batch_size=4096):
            for v in batch.column(0).to_pylist():
                yield _value(v)

    return _emit(texts())


def record_doc(
    kind: str,
    head: bytes,
    f: BinaryIO,
    name: str,
    source: str,
    *,
    field: str | None = None,
    limits: Limits,
) -> Doc:
    """The document of a data file; ``Skipped`` when its field cannot be found."""
    if kind == "parquet":
        fobj = whole_bytes(head, f, limits, "Parquet file")
        doc = Doc(source, kind)
        doc.pieces = guarded(_parquet(fobj, field), "Parquet")
        return _checked(doc)
    encoding, chunks = decode_stream(f, head)
    doc = Doc(source, kind, encoding=encoding)
    if kind == "jsonl":
        doc.pieces = _jsonl(doc, chunks, field)
    elif kind in ("csv", "tsv"):
        doc.pieces = _csv(doc, chunks, field, "," if kind == "csv" else "\t")
    else:
        doc.pieces = _json(doc, chunks, field, limits)
    return _checked(doc)


def _checked(doc: Doc) -> Doc:
    """Read up to the first record now, so a file whose field is missing is refused at once."""
    pieces = doc.pieces
    first = next(pieces, None)
    if first is None:
        doc.pieces = iter(())
    else:

        def rest() -> Iterator:
            yield first
            yield from pieces

        doc.pieces = rest()
    return doc


csv.field_size_limit(64 << 20)  # one cell may be a whole document, but not an unbounded one
