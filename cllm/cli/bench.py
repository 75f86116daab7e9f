"""`python -m cllm bench train|generate|startup`: our engine timed side by side with PyTorch.

Both engines run in the same process on the same weights and data, in alternating blocks so that
noise from other processes lands on both, with the same thread count. Each command prints one
JSON line. torch, transformers and threadpoolctl are optional (the ``bench`` extra): whatever is
missing is left out of the line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

from cllm.engine.config import GPTConfig, num_params
from cllm.engine.machine import machine
from cllm.errors import ValidationError


def cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may use (Linux)
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _add_arch(p: argparse.ArgumentParser, batch_size: int) -> None:
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--threads", type=int, default=cpu_count())
    p.add_argument("--seed", type=int, default=0)


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="time our engine against PyTorch (one JSON line)")
    sub = p.add_subparsers(dest="bench_command", required=True, parser_class=type(p))

    t = sub.add_parser("train", help="tokens/s of forward + backward + clip + AdamW")
    _add_arch(t, batch_size=16)
    t.add_argument("--steps", type=int, default=20, help="timed steps per engine")
    t.add_argument("--warmup-steps", type=int, default=3)
    t.add_argument("--block", type=int, default=5, help="steps per alternating block")
    t.add_argument("--no-torch", action="store_true", help="time our engine only")
    t.add_argument(
        "--attention",
        choices=("auto", "dense", "tiled"),
        default="auto",
        help="our attention: auto picks by sequence length (default)",
    )
    t.set_defaults(func=bench_train)

    g = sub.add_parser("generate", help="tokens/s of greedy decoding with a key-value cache")
    _add_arch(g, batch_size=1)
    g.add_argument("--max-new-tokens", type=int, default=240)
    g.add_argument("--prompt-len", type=int, default=16)
    g.add_argument("--repeats", type=int, default=3)
    g.add_argument("--no-torch", action="store_true", help="time our engine only")
    g.add_argument("--quant", choices=("none", "int8"), default="none", help="our weights")
    g.add_argument(
        "--streams",
        type=int,
        default=1,
        help="N > 1: also N prompts decoded together (continuous batching) against one stream",
    )
    g.set_defaults(func=bench_generate)

    s = sub.add_parser("startup", help="seconds from a fresh process to its first training step")
    _add_arch(s, batch_size=16)
    s.set_defaults(func=bench_startup)

    from cllm.serve.bench import register_bench  # `bench serve`: the HTTP server's streams

    register_bench(sub)
    from cllm.data.bench import register as register_ingest  # bench ingest, bench tokenize

    register_ingest(sub, cpu_count())


def _config(args) -> GPTConfig:
    cfg = GPTConfig(
        vocab_size=args.vocab_size,
        n_embd=args.d_model,
        n_layer=args.layers,
        n_head=args.heads,
        block_size=args.context,
    )
    if not 1 <= args.seq_len <= cfg.block_size:
        raise ValidationError(f"--seq-len must be from 1 to the context {cfg.block_size}")
    for opt in ("batch_size", "threads", "steps", "block", "repeats", "max_new_tokens"):
        if getattr(args, opt, 1) < 1:
            raise ValidationError(f"--{opt.replace('_', '-')} must be at least 1")
    if getattr(args, "warmup_steps", 0) < 0:
        raise ValidationError("--warmup-steps must be at least 0")
    return cfg


def set_threads(n: int) -> dict:
    """Give our engine n threads and report what it runs on.

    The engine cuts each batch into numba's thread count of slices, each with single-threaded
    BLAS, so numba's count is the one knob.
    """
    import numba

    from cllm.engine import kernels  # noqa: F401  (picks numba's threading layer before numba launches it)

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    # the load average tells a reader how busy the machine was while it was timed
    info = {"threads": numba.get_num_threads(), "numba_layer": numba.threading_layer()}
    info["load_avg"] = os.getloadavg()
    info.update(machine())
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return info
    info["blas"] = [
        {k: d.get(k) for k in ("internal_api", "version", "architecture")}
        for d in threadpool_info()
        if d.get("user_api") == "blas"
    ]
    return info


def _torch(no_torch: bool, threads: int):
    if no_torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def sgemm_peak(threads: int, n: int = 1024, repeats: int = 8) -> float:
    """GFLOP/s of NumPy's float32 matrix product (n x n x n) on ``threads`` BLAS threads, the
    best of ``repeats`` 10 ms apart (a busy moment of the host lasts longer than a product):
    the machine's practical arithmetic peak."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    c = np.empty_like(a)
    try:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(threads, user_api="blas")
    except ImportError:
        limit = None
    try:
        best = float("inf")
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            np.matmul(a, a, out=c)
            best = min(best, time.perf_counter() - t0)
            time.sleep(0.01)
    finally:
        if limit is not None:
            limit.restore_original_limits()
    return 2 * n**3 / best / 1e9


def train_flops_per_token(cfg: GPTConfig, T: int) -> float:
    """Forward + backward arithmetic of one token: 6 flops per weight of every matrix product
    (the tied head included) and 6 T D per layer for causal attention (only its unmasked half)."""
    D, F, L, V = cfg.n_embd, cfg.n_inner, cfg.n_layer, cfg.vocab_size
    return 6.0 * (L * (4 * D * D + 2 * D * F) + V * D) + 6.0 * L * T * D


def _pause() -> None:
    time.sleep(0.05)  # let the other engine's spinning worker threads go idle


class _OursTrainer:
    """Our training step, the way the trainer runs it."""

    def __init__(self, gpt, lr: float = 1e-3, clip: float = 1.0):
        from cllm.engine.optim import AdamW

        self.gpt, self.lr, self.clip = gpt, lr, clip
        self.opt = AdamW.for_model(gpt, lr=lr, weight_decay=0.1, betas=(0.9, 0.99))

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        from cllm.engine.optim import clip_grad_norm

        loss = self.gpt.forward(x, y)
        self.gpt.backward()
        clip_grad_norm(self.gpt.grads, self.clip)
        self.opt.step(self.gpt.params, self.gpt.grads, lr=self.lr)
        return loss


def bench_train(args) -> int:
    cfg = _config(args)
    from cllm.engine.model import GPT

    info = set_threads(args.threads)
    torch = _torch(args.no_torch, info["threads"])  # the same count for both
    B, T = args.batch_size, args.seq_len
    rng = np.random.default_rng(args.seed)
    data = rng.integers(0, cfg.vocab_size, (8, B, T + 1), dtype=np.int32)
    gpt = GPT(cfg, seed=args.seed, attention=args.attention)
    steps = {"ours": _OursTrainer(gpt).step}
    if torch is not None:
        from cllm.engine import torch_ref

        ref = torch_ref.from_flat(cfg, gpt.params)
        opt = torch_ref.make_optimizer(ref, lr=1e-3)
        steps["torch"] = lambda x, y: torch_ref.train_step(ref, opt, x, y, lr=1e-3)[0]
    secs, losses, done = dict.fromkeys(steps, 0.0), {}, dict.fromkeys(steps, 0)

    def run(name: str, n: int, timed: bool) -> None:
        t0 = time.perf_counter()
        for _ in range(n):
            batch = data[done[name] % len(data)]
            losses[name] = float(steps[name](batch[:, :-1], batch[:, 1:]))
            done[name] += 1
        if timed:
            secs[name] += time.perf_counter() - t0
        _pause()

    # the machine's peak first: OpenBLAS's threads spin for a while after a product on several,
    # and the first step timed after it, ours, took 173 ms where the others took 124 (T 1024, 2
    # threads): the untimed steps below absorb that now
    peak_gflops = sgemm_peak(info["threads"])
    _pause()
    # the peak of what our first step allocates (activations, per-thread gradients, temporaries)
    tracemalloc.start()
    run("ours", 1, timed=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    warm = max(1, args.warmup_steps)  # both engines take the same steps
    for name in steps:
        run(name, warm - (name == "ours"), timed=False)
    order, left = list(steps), args.steps
    while left > 0:  # alternate blocks, swapping who goes first each round
        n = min(args.block, left)
        for name in order:
            run(name, n, timed=True)
        order.reverse()
        left -= n
    # and again after the timed steps (run() has paused: PyTorch's threads are idle), the better
    # of the two: one taken while the host was busy made our share of it 1.31
    peak_gflops = max(peak_gflops, sgemm_peak(info["threads"]))
    tok = B * T * args.steps
    out = {"bench": "train", "tokens_per_s": round(tok / secs["ours"], 1)}
    if "torch" in secs:
        out["torch_tokens_per_s"] = round(tok / secs["torch"], 1)
        out["ratio"] = round(secs["torch"] / secs["ours"], 3)
        out["torch_version"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
        out["torch_isa"] = _torch_isa(torch)
    out["peak_step_mb"] = round(peak / 2**20, 1)
    gflops = train_flops_per_token(cfg, T) * tok / secs["ours"] / 1e9
    out["model_gflops_per_s"] = round(gflops, 1)
    out["sgemm_peak_gflops_per_s"] = round(peak_gflops, 1)
    out["share_of_sgemm_peak"] = round(gflops / peak_gflops, 3)
    out["attention"] = attention_path(gpt, T)
    out["loss"] = round(losses["ours"], 4)
    if "torch" in losses:
        out["torch_loss"] = round(losses["torch"], 4)
    out.update(_describe(cfg, args, steps=args.steps, warmup_steps=args.warmup_steps))
    out.update(info)
    print(json.dumps(out), flush=True)
    return 0


def _torch_isa(torch) -> str:
    """The vector ISA PyTorch's own kernels dispatch to (ATEN_CPU_CAPABILITY can lower it), so
    that a figure names what both engines ran."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:  # older PyTorch
        return "unknown"


def attention_path(gpt, T: int) -> str:
    """Which attention a training step of length T runs: dense, tiled, or tiled and fused."""
    from cllm.engine.model import fused_attention

    if not gpt.tiled(T):
        return "dense"
    return "tiled, fused" if fused_attention(gpt.dtype) else "tiled"


def _describe(cfg: GPTConfig, args, **extra) -> dict:
    return {
        "config": {
            "vocab_size": cfg.vocab_size,
            "d_model": cfg.n_embd,
            "layers": cfg.n_layer,
            "heads": cfg.n_head,
            "context": cfg.block_size,
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "params": num_params(cfg),
            **extra,
        }
    }


def _hf_model(cfg: GPTConfig, params: np.ndarray):
    """transformers' GPT2LMHeadModel on our weights, or None when it is not installed."""
    try:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    from cllm.engine.hf import hf_config

    model = GPT2LMHeadModel(GPT2Config(**hf_config(cfg)))
    from cllm.engine.torch_ref import from_flat

    state = {f"transformer.{k}": v for k, v in from_flat(cfg, params).state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.eval()
    with torch.no_grad():  # the head must be the tied token embedding
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    return model


def copy_bandwidth(mb: int = 256, repeats: int = 3) -> float:
    """GB/s of a large NumPy copy (bytes read plus bytes written), the best of ``repeats``: the
    memory bandwidth that one-token decoding, which reads every weight once, can approach."""
    src = np.ones(mb * 2**20 // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def bench_generate(args) -> int:
    cfg = _config(args)
    from cllm.engine.batch import generate_batch
    from cllm.engine.generate import sample_stream
    from cllm.engine.model import GPT
    from cllm.engine.quant import check_format

    check_format(args.quant, cfg)
    if args.streams < 1:
        raise ValidationError("--streams must be at least 1")
    info = set_threads(args.threads)
    torch = _torch(args.no_torch, info["threads"])  # the same count for both
    rng = np.random.default_rng(args.seed)
    P = min(args.prompt_len, cfg.block_size - 1)
    n_new = min(args.max_new_tokens, cfg.block_size - P)
    N = args.streams
    prompts = rng.integers(0, cfg.vocab_size, (N, P), dtype=np.int32)
    prompt = prompts[0]
    gpt = GPT(cfg, seed=args.seed)
    reference_params = gpt.params.copy()
    gpt.set_quant(args.quant)

    def ours() -> list[int]:
        it = sample_stream(gpt, prompt, n_new, temperature=0.0, top_k=0, top_p=1.0, seed=0)
        return [int(t) for t in it]

    runs = {"ours": ours}
    if N > 1:
        runs["ours_batch"] = lambda: generate_batch(gpt, list(prompts), n_new, max_streams=N)
    if torch is not None:
        from cllm.engine import torch_ref

        ref = torch_ref.from_flat(cfg, reference_params).eval()
        if N == 1:
            runs["torch"] = lambda: torch_ref.generate(ref, prompt, n_new)
        hf = _hf_model(cfg, reference_params)
        if hf is not None:
            ids = torch.as_tensor(prompts.astype(np.int64))  # N prompts of one length: no padding

            def hf_run() -> list:
                with torch.no_grad():
                    out = hf.generate(
                        ids,
                        attention_mask=torch.ones_like(ids),
                        use_cache=True,
                        max_new_tokens=n_new,
                        min_new_tokens=n_new,
                        do_sample=False,
                        pad_token_id=0,
                    )
                return out[:, P:].tolist() if N > 1 else out[0, P:].tolist()

            runs["hf"] = hf_run
    secs, toks = dict.fromkeys(runs, 0.0), {}
    cpu = dict.fromkeys(runs, 0.0)  # this process's CPU seconds: the work, whatever the load
    for fn in runs.values():  # warm up: compile, allocate, fill caches
        fn()
    made = {k: n_new * (N if k in ("ours_batch", "hf") else 1) for k in runs}
    for r in range(args.repeats):
        for name in runs if r % 2 == 0 else list(runs)[::-1]:
            _pause()
            t0, c0 = time.perf_counter(), time.process_time()
            toks[name] = fn_out = runs[name]()
            secs[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
            got = (
                sum(map(len, fn_out))
                if name in ("ours_batch",) or (name == "hf" and N > 1)
                else len(fn_out)
            )
            if got != made[name]:
                raise ValidationError(f"{name} made {got} tokens, not {made[name]}")
    rate = {k: made[k] * args.repeats / s for k, s in secs.items()}
    bw = copy_bandwidth()
    out = {"bench": "generate", "quant": gpt.quant, "tokens_per_s": round(rate["ours"], 1)}
    weights = gpt.decode_weights().bytes_per_token
    out["weights_mb_per_token"] = round(weights / 1e6, 2)
    out["weights_gb_per_s"] = round(weights * rate["ours"] / 1e9, 2)
    out["copy_bandwidth_gb_per_s"] = round(bw, 1)
    if N > 1:
        out["streams"] = N
        out["batch_tokens_per_s"] = round(rate["ours_batch"], 1)
        out["batch_over_single"] = round(rate["ours_batch"] / rate["ours"], 2)
        # tokens per CPU-second, batch over single: what a token of a batch costs against one
        # alone, which the machine's other load hardly moves (the wall-clock ratio it does)
        out["batch_over_single_per_cpu_s"] = round(
            made["ours_batch"] / cpu["ours_batch"] / (made["ours"] / cpu["ours"]), 2
        )
        out["batch_first_stream_same_as_single"] = toks["ours_batch"][0] == toks["ours"]
    if "hf" in rate:
        key = "ours_batch" if N > 1 else "ours"
        out["hf_tokens_per_s"] = round(rate["hf"], 1)
        out["ratio"] = round(rate[key] / rate["hf"], 3)
        out["same_tokens_as_hf"] = toks[key] == toks["hf"]
    if "torch" in rate:
        out["torch_tokens_per_s"] = round(rate["torch"], 1)
        out["torch_ratio"] = round(rate["ours"] / rate["torch"], 3)
        out["same_tokens_as_torch"] = toks["ours"] == toks["torch"]
    out.update(_describe(cfg, args, prompt_len=P, max_new_tokens=n_new, repeats=args.repeats))
    out.update(info)
    print(json.dumps(out), flush=True)
    return 0


def first_step(
    vocab_size: int, d_model: int, layers: int, heads: int, context: int, B: int, T: int
):
    """What a fresh process does before it trains: import the engine, build, take one step.

    Prints the seconds its import and its first step took, for the parent to split the total.
    """
    t0 = time.perf_counter()
    from cllm.engine.model import GPT

    t1 = time.perf_counter()
    cfg = GPTConfig(vocab_size, d_model, layers, heads, context)
    x = np.random.default_rng(0).integers(0, vocab_size, (B, T + 1), dtype=np.int32)
    _OursTrainer(GPT(cfg)).step(x[:, :-1], x[:, 1:])
    print(json.dumps({"import_model_s": t1 - t0, "first_step_s": time.perf_counter() - t1}))


def bench_startup(args) -> int:
    cfg = _config(args)
    call = (
        "from cllm.cli.bench import first_step; first_step("
        f"{cfg.vocab_size}, {cfg.n_embd}, {cfg.n_layer}, {cfg.n_head}, {cfg.block_size}, "
        f"{args.batch_size}, {args.seq_len})"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    times, parts = [], []
    # A fresh numba cache folder: the first run compiles every kernel (cold), the second loads them.
    with tempfile.TemporaryDirectory(prefix="cllm-numba-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        for _ in range(2):
            t0 = time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-c", call], env=env, check=True, stdout=subprocess.PIPE, text=True
            )
            times.append(time.perf_counter() - t0)
            parts.append(json.loads(run.stdout.strip().splitlines()[-1]))
    out = {"bench": "startup", "cold_s": round(times[0], 3), "warm_s": round(times[1], 3)}
    for key in parts[0]:
        out["cold_" + key], out["warm_" + key] = (round(p[key], 3) for p in parts)
    out["load_avg"] = os.getloadavg()
    out.update(_describe(cfg, args))
    print(json.dumps(out), flush=True)
    return 0
