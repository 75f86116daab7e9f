"""`python -m cllm bench ingest|tokenize`: how fast files go into a queue.

``ingest`` adds a folder (or a mixed folder it generates: plain text, Markdown, code, HTML
articles, PDFs, DOCX, JSONL, CSV and archives) to a fresh queue, one kind at a time, and reports
MB/s per kind and pages/s for PDF; ``--tiny N`` times N tiny files (files/s). ``tokenize`` times
the BPE tokenizer alone on plain text (MB/s), with the engine's batch call on ``--threads``
threads. Each prints one JSON line. Generated folders go in a temporary folder that is deleted.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path


def _threads(n: int) -> None:
    """The Rust thread pool of ``tokenizers`` reads this before its first parallel call."""
    os.environ["RAYON_NUM_THREADS"] = str(max(1, int(n)))
    os.environ["TOKENIZERS_PARALLELISM"] = "true"


def _bpe(vocab_size: int):
    from cllm.data.corpus import demo_corpus
    from cllm.engine.tokenizer import train_tokenizer

    return train_tokenizer("bpe", demo_corpus(), vocab_size)


def _prose(rng: random.Random, words: list[str], n_chars: int) -> str:
    """Lines of the corpus's words in random order, in paragraphs."""
    out, n = [], 0
    while n < n_chars:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(8, 16))) + ".\n"
        if rng.random() < 0.15:
            line += "\n"
        out.append(line)
        n += len(line)
    return "".join(out)


def pdf_bytes(pages: list[str]) -> bytes:
    """A PDF whose pages show ``pages`` in Helvetica (a real text layer), written directly."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        ops = ["BT", "/F1 10 Tf", "12 TL", "50 760 Td"]
        for line in text.split("\n"):
            esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({esc}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1", errors="replace")
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font "
            f"<< /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
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
    out.write(b"".join(b"%010d 00000 n \n" % off for off in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objs) + 1))
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def make_mixed_folder(root: Path, mb: float, seed: int = 0) -> dict:
    """A folder of about ``mb`` MB: mostly plain text, and every other kind the queue reads."""
    import tarfile
    import zipfile

    from cllm.data.corpus import corpus_files, demo_corpus

    rng = random.Random(seed)
    words = demo_corpus().split()
    root.mkdir(parents=True, exist_ok=True)
    total = int(mb * 1e6)
    made: dict[str, int] = {}

    def put(sub: str, name: str, data: bytes) -> None:
        p = root / sub / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        made[sub] = made.get(sub, 0) + len(data)

    for i in range(40):  # PDFs: 40 x 25 pages
        pages = [_prose(rng, words, 3000)[:3000] for _ in range(25)]
        put("pdf", f"doc{i:03d}.pdf", pdf_bytes([p.replace("\n\n", "\n") for p in pages]))
    for i in range(200):  # HTML articles with boilerplate
        paras = "".join(f"<p>{p}</p>\n" for p in _prose(rng, words, 20_000).split("\n\n"))
        page = (
            f"<html><head><title>Article {i}</title></head><body><nav><a href='/'>Home</a>"
            f"</nav><main><article><h1>Article {i}</h1>{paras}</article></main>"
            "<footer>Copyright</footer></body></html>"
        )
        put("html", f"page{i:04d}.html", page.encode())
    for i in range(100):
        put("markdown", f"note{i:03d}.md", ("# Notes\n\n" + _prose(rng, words, 20_000)).encode())
    code = [p.read_bytes() for p in corpus_files() if p.suffix == ".py"]
    for i, c in enumerate(code):
        put("code", f"mod{i:03d}.py", c)
    for i in range(5):
        recs = "".join(
            json.dumps({"id": k, "text": _prose(rng, words, 400)}) + "\n" for k in range(2000)
        )
        put("jsonl", f"data{i}.jsonl", recs.encode())
    for i in range(5):
        rows = "".join(f'{k},"{_prose(rng, words, 300).strip()}"\n' for k in range(2000))
        put("csv", f"table{i}.csv", ("id,text\n" + rows).encode())
    for i in range(2):
        zbuf, tbuf = io.BytesIO(), io.BytesIO()
        with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
            for k in range(50):
                z.writestr(f"z{k}.txt", _prose(rng, words, 20_000))
        put("archive", f"bundle{i}.zip", zbuf.getvalue())
        with tarfile.open(fileobj=tbuf, mode="w:gz") as t:
            for k in range(50):
                data = _prose(rng, words, 20_000).encode()
                info = tarfile.TarInfo(f"t{k}.txt")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        put("archive", f"bundle{i}.tar.gz", tbuf.getvalue())
    try:
        import docx

        for i in range(10):
            d = docx.Document()
            for p in _prose(rng, words, 20_000).split("\n\n"):
                d.add_paragraph(p)
            buf = io.BytesIO()
            d.save(buf)
            put("docx", f"report{i}.docx", buf.getvalue())
    except ImportError:  # pragma: no cover
        pass
    i = 0
    while sum(made.values()) < total:  # the rest: plain text files of about 1 MB
        put("text", f"book{i:04d}.txt", _prose(rng, words, 1_000_000).encode())
        i += 1
    return made


def _kind_of(path: Path) -> str:
    return path.relative_to(path.parents[1]).parts[0]


def bench_ingest(args) -> int:
    _threads(args.threads)
    from cllm.data.dataqueue import DataQueue, walk_files
    from cllm.engine.tokenizer import ByteTokenizer

    tok = _bpe(args.vocab_size) if args.tokenizer == "bpe" else ByteTokenizer()
    tmp = Path(tempfile.mkdtemp(prefix="cllm-bench-ingest-", dir=args.tmp))
    result: dict = {"bench": "ingest", "tokenizer": args.tokenizer, "threads": args.threads}
    try:
        if args.tiny:
            folder = tmp / "tiny"
            folder.mkdir()
            for i in range(args.tiny):
                (folder / f"f{i:06d}.txt").write_text(f"tiny file number {i}\n")
            with DataQueue(tmp / "q_queue", tok) as q:
                t0 = time.perf_counter()
                r = q.add_folder(folder)
                dt = time.perf_counter() - t0
            result.update(files=args.tiny, added=len(r.added), seconds=round(dt, 2))
            result["files_per_s"] = round(args.tiny / dt)
        else:
            folder = Path(args.folder) if args.folder else tmp / "mixed"
            if not args.folder:
                make_mixed_folder(folder, args.mb)
            files = walk_files(folder)
            groups: dict[str, list[Path]] = {}
            for f in files:
                groups.setdefault(_kind_of(f) if not args.folder else f.suffix, []).append(f)
            kinds, all_bytes, all_s, all_tokens = {}, 0, 0.0, 0
            with DataQueue(tmp / "q_queue", tok) as q:
                for kind, group in sorted(groups.items()):
                    size = sum(f.stat().st_size for f in group)
                    t0 = time.perf_counter()
                    r = q.add_files(group)
                    dt = time.perf_counter() - t0
                    row = {
                        "files": len(group),
                        "MB": round(size / 1e6, 1),
                        "seconds": round(dt, 2),
                        "MB_per_s": round(size / 1e6 / dt, 2),
                        "tokens": r.tokens,
                        "skipped": len(r.skipped),
                    }
                    if kind in ("pdf", ".pdf"):
                        from cllm.data.documents import pdf_page_count

                        pages = 0
                        for f in group:
                            with open(f, "rb") as fh:
                                pages += pdf_page_count(fh)
                        row["pages"] = pages
                        row["pages_per_s"] = round(pages / dt, 1)
                    kinds[kind] = row
                    all_bytes += size
                    all_s += dt
                    all_tokens += r.tokens
            result.update(
                MB=round(all_bytes / 1e6, 1),
                seconds=round(all_s, 1),
                MB_per_s=round(all_bytes / 1e6 / all_s, 2),
                tokens=all_tokens,
                kinds=kinds,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))
    return 0


def bench_tokenize(args) -> int:
    """Ours (the fast path: a compiled split and the table of known words, starting empty) and
    the `tokenizers` engine's batch API on ``--threads`` threads, on the same text, alternating;
    the ids must agree."""
    _threads(args.threads)
    from cllm.data.corpus import demo_corpus
    from cllm.engine.machine import machine
    from cllm.engine.tokenizer import BPETokenizer, _chunks

    tok = _bpe(args.vocab_size)
    rng = random.Random(0)
    text = _prose(rng, demo_corpus().split(), int(args.mb * 1e6))
    size = len(text.encode("utf-8"))
    BPETokenizer(tok.hf.to_str()).encode("warm the compiled code")
    batch = getattr(tok.hf, "encode_batch_fast", tok.hf.encode_batch)
    batch(["warm the engine's thread pool"] * 4, add_special_tokens=False)
    chunks = _chunks(text, 1 << 16)
    ours, engine = {"first": [], "again": []}, []
    for _ in range(max(1, args.rounds)):
        fresh = BPETokenizer(tok.hf.to_str())  # an empty table: every word is new once
        for key in ("first", "again"):
            t0 = time.perf_counter()
            ids = fresh.encode(text)
            ours[key].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = batch(chunks, add_special_tokens=False)
        engine.append(time.perf_counter() - t0)
    same = ids.tolist() == [i for e in ref for i in e.ids]
    mbs = {k: round(size / 1e6 / min(v), 2) for k, v in ours.items()}
    print(
        json.dumps(
            {
                "bench": "tokenize",
                "tokenizer": f"bpe {tok.vocab_size}",
                "MB": round(size / 1e6, 1),
                "tokens": int(ids.size),
                "distinct_words": len(fresh._words),
                "MB_per_s": mbs["first"],  # the table starts empty: every word met is learned
                "MB_per_s_known_words": mbs["again"],
                "engine_threads": args.threads,
                "engine_MB_per_s": round(size / 1e6 / min(engine), 2),
                "same_ids": same,
                **machine(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )
    return 0 if same else 1


def register(sub, cpu_count: int) -> None:
    """The ``bench ingest`` and ``bench tokenize`` subcommands."""
    i = sub.add_parser("ingest", help="MB/s and PDF pages/s of queue add, or files/s (--tiny)")
    i.add_argument("folder", nargs="?", help="a folder to add (default: generate a mixed one)")
    i.add_argument("--mb", type=float, default=100.0, help="size of the generated folder")
    i.add_argument("--tiny", type=int, default=0, metavar="N", help="time N tiny files instead")
    i.add_argument("--tokenizer", choices=("bpe", "byte"), default="bpe")
    i.add_argument("--vocab-size", type=int, default=8192)
    i.add_argument("--threads", type=int, default=cpu_count)
    i.add_argument("--tmp", default=None, help="where to generate (default: the system's temp)")
    i.set_defaults(func=bench_ingest)
    t = sub.add_parser("tokenize", help="MB/s of the BPE tokenizer on plain text")
    t.add_argument("--mb", type=float, default=20.0)
    t.add_argument("--vocab-size", type=int, default=8192)
    t.add_argument("--threads", type=int, default=cpu_count, help="the engine's threads")
    t.add_argument("--rounds", type=int, default=2)
    t.set_defaults(func=bench_tokenize)
