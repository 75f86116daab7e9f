"""`python -m cllm bench serve`: first-token latency and tokens/s of `cllm serve` for 1 and N
concurrent streaming clients, over real HTTP on 127.0.0.1 (one JSON line).

A model of the chosen preset (random weights, a byte-level BPE trained on generated words to the
preset's vocabulary) is served from a temporary folder; each client streams a completion with
``stream_options.include_usage`` and the tokens counted are the server's usage counts.

The clients run in a process of their own (``_clients``), as a server's clients do: as threads
of the server's process they took the interpreter lock from its event loop and its decoding
thread for every line they parsed (8 streams of the small preset, 2 cores, the same sampling:
950-1,620 tok/s with them in the process, 1,337-1,645 without).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import queue
import statistics
import tempfile
import threading
import time

import numpy as np

from cllm.engine.machine import machine


def register_bench(sub) -> None:
    s = sub.add_parser("serve", help="first-token latency and tokens/s of `cllm serve` streams")
    s.add_argument("--preset", choices=("tiny", "small", "medium", "large"), default="tiny")
    s.add_argument("--streams", type=int, nargs="+", default=[1, 8], help="concurrent clients")
    s.add_argument("--max-tokens", type=int, default=128, help="tokens per stream")
    s.add_argument("--prompt-tokens", type=int, default=32, help="about this many prompt tokens")
    s.set_defaults(func=bench_serve)


def _words(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    p = 1 / np.arange(1, 27)
    p /= p.sum()
    out = []
    for _ in range(n):
        out.append("".join(rng.choice(letters, size=int(rng.integers(1, 9)), p=p)))
    return " ".join(out)


def _stream(port: int, body: dict, out: list, i: int) -> None:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    first, tokens = None, 0
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        d = json.loads(line[6:])
        if d.get("usage"):
            tokens = d["usage"]["completion_tokens"]
        elif first is None and d["choices"] and d["choices"][0]["text"]:
            first = time.perf_counter() - t0
    conn.close()
    out[i] = (first if first is not None else float("nan"), tokens, time.perf_counter() - t0)


def _clients(port: int, bodies: list[dict], results) -> None:
    """Stream every body at once, a thread each; puts (wall seconds, [(first, tokens, secs)])."""
    out: list = [None] * len(bodies)
    threads = [
        threading.Thread(target=_stream, args=(port, b, out, i)) for i, b in enumerate(bodies)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((time.perf_counter() - t0, out))


def _run_clients(port: int, bodies: list[dict]) -> tuple[float, list]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    p = ctx.Process(target=_clients, args=(port, bodies, results), name="cllm-bench-clients")
    p.start()
    try:
        while True:  # a client process that died without a word must not hang the benchmark
            try:
                wall, out = results.get(timeout=1.0)
                break
            except queue.Empty:
                if not p.is_alive() and results.empty():  # (its last put lands before it exits)
                    raise RuntimeError(f"the benchmark's clients exited ({p.exitcode})") from None
    finally:
        p.join(timeout=30)
    if any(o is None for o in out):
        raise RuntimeError("a benchmark client failed (see its error above)")
    return wall, out


def bench_serve(args) -> int:
    from cllm.engine.config import PRESETS
    from cllm.engine.tokenizer import train_tokenizer
    from cllm.errors import ValidationError
    from cllm.models.registry import Registry
    from cllm.serve.server import Server

    if min(args.streams) < 1 or args.max_tokens < 1 or args.prompt_tokens < 1:
        raise ValidationError("--streams, --max-tokens and --prompt-tokens must be at least 1")
    cfg = PRESETS[args.preset]
    text = _words(60_000)
    tok = train_tokenizer("bpe", text, cfg.vocab_size)
    from dataclasses import replace

    cfg = replace(cfg, vocab_size=tok.vocab_size)
    result = {
        "bench": "serve",
        "preset": args.preset,
        "config": cfg.to_dict(),
        **machine(),
        "threads": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_avg": round(os.getloadavg()[0], 2),
        "max_tokens": args.max_tokens,
        "clients": "threads of a process of their own",
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as d:
        reg = Registry(d)
        from cllm.engine.lm import LanguageModel

        reg.dir.mkdir(parents=True, exist_ok=True)
        LanguageModel.create(cfg, tok, "bench").save(reg.path("bench"))
        srv = Server(reg, port=0).start()
        try:
            prompt = tok.decode(tok.encode(text)[: args.prompt_tokens])
            base = {
                "model": "bench",
                "prompt": prompt,
                "max_tokens": args.max_tokens,
                "temperature": 1.0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            for _ in range(3):  # load, compile and warm the caches first
                _stream(srv.port, {**base, "max_tokens": 8}, [None], 0)
            for n in args.streams:
                wall, out = _run_clients(srv.port, [{**base, "seed": i} for i in range(n)])
                firsts = [o[0] for o in out]
                tokens = sum(o[1] for o in out)
                result["runs"].append(
                    {
                        "streams": n,
                        "first_token_ms_median": round(1000 * statistics.median(firsts), 1),
                        "first_token_ms_max": round(1000 * max(firsts), 1),
                        "tokens": tokens,
                        "seconds": round(wall, 3),
                        "tokens_per_s": round(tokens / wall, 1),
                        "tokens_per_s_per_stream": round(
                            statistics.mean(o[1] / o[2] for o in out), 1
                        ),
                    }
                )
        finally:
            srv.stop()
    result["load_avg_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return 0
