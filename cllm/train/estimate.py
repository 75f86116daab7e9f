"""What a training run will cost before it starts: time to the target, peak memory, disk.

Time: the first step (kernels loaded) + steps left x this machine's seconds per step for the
shape (model config, B, T, threads) + the validation passes (``eval_batches`` forwards every
``eval_interval`` steps) + the saves (one per validation, as each may find a better loss, per
epoch end, per ``checkpoint_interval`` and at the end, each a model file written at the folder's
measured speed of durable writes). The probe (``probe``) builds a GPT of that shape with random
weights and, after one warm-up step, times training steps (at least 4, for about 2 s; the median
counts) and forwards; the result is cached per shape and machine in ``models/.probe-cache.json``,
so only the first estimate of a shape pays the seconds it takes.

Peak memory (resident, the process's peak RSS): the runtime (Python, NumPy, numba and its compiled
kernels, BLAS buffers, whatever else the process holds: measured by the probe as the process's
RSS after its first step minus the probe's arrays, which are all touched by then) plus the arrays
the trainer holds, counted from their shapes (``memory_parts``): parameters (4 bytes each),
gradients (one buffer per batch slice: the engine splits a batch over its threads), AdamW's two
moments and its weight-decay mask, the activations of every slice for this B and T
(``cllm.engine.model.Activations``), the validation batches, and the tokenizer (its JSON times
``TOKENIZER_FACTOR`` for the objects built from it).

Checkpoint disk: up to ``keep_checkpoints`` + 1 (the best) model files beside the model, each the
size of the model file (weights, moments, tokenizer, history).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cllm.atomic import write_atomic
from cllm.engine.config import GPTConfig, num_params
from cllm.engine.model import (
    fused_scratch,
    kept_layers,
    tile_layout,
    tiled_scratch_size,
    use_tiled,
)

CACHE_FILE = ".probe-cache.json"
PROBE_STEPS = 4  # timed training steps after one warm-up step, at least
PROBE_SECONDS, PROBE_MAX = 2.0, 30  # and more, up to this long or this many, for a steadier median
TOKENIZER_FACTOR = 4  # resident bytes per byte of tokenizer JSON (vocabulary dicts, merges)


def current_rss() -> int:
    """This process's resident set size now, in bytes (Linux /proc; elsewhere the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss()


def peak_rss(children: bool = False) -> int:
    """Peak resident set size in bytes of this process (or of its finished children)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    kb = resource.getrusage(who).ru_maxrss
    return kb if sys.platform == "darwin" else kb * 1024  # macOS reports bytes, Linux KiB


def slices(B: int, T: int, threads: int) -> list[int]:
    """Rows of each batch slice, as the engine cuts a batch (``GPT._plan``)."""
    S = max(1, min(threads, B))
    if B * T < 256:
        S = 1
    cuts = [B * i // S for i in range(S + 1)]
    return [cuts[i + 1] - cuts[i] for i in range(S)]


def activation_elements(cfg: GPTConfig, B: int, T: int, tiled: bool = False, keep: int = 0) -> int:
    """Entries of ``Activations(cfg, B, T, tiled=tiled, keep=keep)``: every buffer one training
    step of B x T needs. Dense attention keeps each layer's T x T probabilities; the tiled one
    keeps row statistics, one tile's scratch, and the probabilities of ``keep`` layers."""
    L, D, F, H, V, N = cfg.n_layer, cfg.n_embd, cfg.n_inner, cfg.n_head, cfg.vocab_size, B * T
    # resid_mid, ln1, ln2, atty (N x D each), qkv (N x 3D), their means and rstds, fch x 2
    per_layer = 7 * N * D + 4 * N + 2 * N * F
    if tiled:  # lse per layer; kept tiles; scratch: a tile's scores and grads, dk and dv
        attention = L * B * H * T + keep * B * tile_layout(T, H)[1]
        attention += tiled_scratch_size(H, T, cfg.head_size, fused_scratch(keep))
    else:  # probabilities per layer, and the backward's scratch for their gradients
        attention = (L + 1) * B * H * T * T
    return (
        (L + 1) * N * D  # resid
        + L * per_layer
        + attention
        + N * D
        + 2 * N  # ln_f
        + N * V
        + N  # logits, losses
        + 3 * N * D
        + 3 * N * D
        + N * F
        + N  # ones
    )


def memory_parts(
    cfg: GPTConfig, B: int, T: int, threads: int, tokenizer_bytes: int, eval_batches: int
) -> dict[str, int]:
    """Bytes of each array the trainer holds (float32 and int32: 4 bytes an entry)."""
    n = num_params(cfg)
    rows = slices(B, T, threads)
    tiled = use_tiled(T)  # as a model with attention "auto" trains
    keep = kept_layers(cfg, B, T, 4) if tiled else 0
    return {
        "params": 4 * n,
        "grads": 4 * n * len(rows),
        "adamw": 4 * n * 3,  # m, v and the weight-decay mask
        # each slice's buffers and the int32 token ids it keeps from its forward
        "activations": 4 * sum(activation_elements(cfg, b, T, tiled, keep) + b * T for b in rows),
        "validation": 4 * eval_batches * B * (T + 1) * 2,
        "tokenizer": TOKENIZER_FACTOR * tokenizer_bytes,
    }


@dataclass
class Estimate:
    steps: int  # steps left to the target (or this run's --steps)
    seconds: float
    seconds_per_step: float
    memory: dict[str, int]  # runtime + memory_parts
    peak_bytes: int
    checkpoint_bytes: int
    model_file_bytes: int
    probe_cached: bool
    shape: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def line(self) -> str:
        return (
            f"estimate: {self.steps:,} steps, {_duration(self.seconds)} "
            f"({self.seconds_per_step * 1000:.1f} ms/step); peak memory "
            f"{_mb(self.peak_bytes)} (runtime {_mb(self.memory['runtime'])}, model and "
            f"optimizer {_mb(sum(self.memory[k] for k in ('params', 'grads', 'adamw')))}, "
            f"activations {_mb(self.memory['activations'])}); checkpoints up to "
            f"{_mb(self.checkpoint_bytes)} on disk"
        )


def _mb(b: int) -> str:
    return f"{b / 1e6:,.0f} MB" if b >= 10e6 else f"{b / 1e6:.1f} MB"


def _duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600} h {s // 60 % 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def shape_key(cfg: GPTConfig, B: int, T: int, threads: int) -> str:
    c = cfg
    return (
        f"V{c.vocab_size}-D{c.n_embd}-L{c.n_layer}-H{c.n_head}-C{c.block_size}-F{c.n_inner}"
        f"-B{B}-T{T}-t{threads}-{platform.machine()}-{os.cpu_count()}cpu"
    )


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def probe(cfg: GPTConfig, B: int, T: int, *, steps: int = PROBE_STEPS) -> dict:
    """Time training steps and validation forwards of this shape on random weights."""
    import gc

    from cllm.engine.model import GPT
    from cllm.engine.optim import AdamW, clip_grad_norm

    gpt = GPT(cfg, seed=0)
    opt = AdamW.for_model(gpt)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (B, T + 1)).astype(np.int32)

    def train_step() -> None:
        gpt.forward(x[:, :-1], x[:, 1:])
        gpt.backward()
        clip_grad_norm(gpt.grads, 1.0)
        opt.step(gpt.params, gpt.grads, 1e-4)

    t0 = time.perf_counter()
    train_step()  # warm-up: kernels compiled or loaded, buffers allocated
    first = time.perf_counter() - t0
    # the runtime: what the process holds beyond this shape's arrays (all touched by now)
    arrays = memory_parts(cfg, B, T, len(gpt.shards), 0, 0)
    runtime = current_rss() - sum(arrays.values())
    times: list[float] = []
    while len(times) < steps or (sum(times) < PROBE_SECONDS and len(times) < PROBE_MAX):
        t0 = time.perf_counter()
        train_step()
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(2):
        gpt.forward(x[:, :-1], x[:, 1:])
    fwd = (time.perf_counter() - t0) / 2
    gpt = opt = None
    gc.collect()
    return {
        "seconds_per_step": float(np.median(times)),
        "forward_seconds": fwd,
        "first_step_seconds": first,
        "runtime_rss": max(0, runtime),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def disk_speed(folder: Path, nbytes: int = 8 << 20) -> float:
    """Bytes per second of a durable write (written, fsynced, removed) in ``folder``."""
    tmp = folder / f".probe-disk-{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(tmp, "wb") as f:
            f.write(b"\0" * nbytes)
            f.flush()
            os.fsync(f.fileno())
        return nbytes / max(time.perf_counter() - t0, 1e-6)
    except OSError:
        return 100e6  # a folder we cannot write to: a plain disk's speed
    finally:
        tmp.unlink(missing_ok=True)


def probe_cached(models_dir: Path | str, cfg: GPTConfig, B: int, T: int, threads: int):
    """(probe result, True if it came from the cache); measures and caches it when missing."""
    path = Path(models_dir) / CACHE_FILE
    key = shape_key(cfg, B, T, threads)
    cache = _read_cache(path)
    if key in cache:
        return cache[key], True
    result = probe(cfg, B, T)
    result["disk_bytes_per_s"] = disk_speed(Path(models_dir))
    cache = _read_cache(path)  # another process may have added shapes meanwhile
    cache[key] = result
    try:
        Path(models_dir).mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(cache, indent=1), durable=False)
    except OSError:
        pass  # a read-only folder: the next estimate probes again
    return result, False


def estimate(
    cfg: GPTConfig,
    *,
    B: int,
    T: int,
    steps: int,
    eval_interval: int,
    eval_batches: int,
    keep_checkpoints: int,
    tokenizer_bytes: int,
    history_steps: int,
    threads: int,
    probe_result: dict,
    cached: bool = False,
    epochs: int = 0,
    checkpoint_interval: int = 0,
) -> Estimate:
    """The cost of ``steps`` more steps of this shape (see the module docstring); ``epochs``
    ends and ``checkpoint_interval`` add saves."""
    sps = float(probe_result["seconds_per_step"])
    evals = steps // max(1, eval_interval) + 1
    n = num_params(cfg)
    file_bytes = 12 * n + tokenizer_bytes + 16 * (history_steps + steps) + 64 * 1024
    # saves: every validation may find a better loss, every epoch end, the interval, the end
    saves = evals + epochs + 1 + (steps // checkpoint_interval if checkpoint_interval else 0)
    seconds = (
        float(probe_result.get("first_step_seconds", sps))
        + steps * sps
        + evals * eval_batches * float(probe_result["forward_seconds"])
        + saves * file_bytes / float(probe_result.get("disk_bytes_per_s", 100e6))
    )
    parts = memory_parts(cfg, B, T, threads, tokenizer_bytes, eval_batches)
    mem = {"runtime": int(probe_result["runtime_rss"]), **parts}
    return Estimate(
        steps=steps,
        seconds=seconds,
        seconds_per_step=sps,
        memory=mem,
        peak_bytes=sum(mem.values()),
        checkpoint_bytes=(keep_checkpoints + 1) * file_bytes,
        model_file_bytes=file_bytes,
        probe_cached=cached,
        shape=shape_key(cfg, B, T, threads),
    )


def for_model(registry, name: str, *, max_steps: int | None = None, settings: dict | None = None):
    """The estimate for training model ``name`` to its target (or ``max_steps`` steps), with
    ``settings`` (``TrainConfig`` fields, ``target_epochs``) applied as a run would apply them.
    Probes the shape when it is not cached (seconds)."""
    from dataclasses import replace

    from cllm.engine.model import default_threads
    from cllm.models.rules import check_target_epochs, validate_train_settings
    from cllm.train.sampler import SequentialStream, WindowSampler

    settings = dict(settings or {})
    info = registry.info(name)
    meta = info.meta
    target = settings.pop("target_epochs", None)
    trained = meta.epochs_trained
    target = (
        check_target_epochs(target, trained)
        if target is not None
        else meta.target_epochs
    )
    tc = replace(info.train, **validate_train_settings(settings, info.config))
    B, T = tc.batch_size, tc.seq_len
    n_train = 0
    n_items = 0
    dq = registry.queue(info.name)
    try:
        for it in dq.items():
            if not it.validation:
                n_train += it.n_tokens - int(it.n_tokens * tc.val_fraction)
                n_items += 1
        tok_bytes = len(dq.tokenizer.to_json().encode("utf-8"))
    finally:
        dq.close()
    segs = [(0, 0, n_train)] + [(0, 0, 0)] * max(0, n_items - 1)
    cls = SequentialStream if tc.sampling == "sequential" else WindowSampler
    bpe = cls.batches_per_epoch(segs, B, T)
    if max_steps is not None:
        steps = int(max_steps)
    else:
        pos = meta.position or {}
        steps = max(0, (target - trained) * bpe - int(pos.get("batch") or 0))
    threads = default_threads()
    result, cached = probe_cached(registry.dir, info.config, B, T, threads)
    est = estimate(
        info.config,
        B=B,
        T=T,
        steps=steps,
        eval_interval=tc.eval_interval,
        eval_batches=tc.eval_batches,
        keep_checkpoints=tc.keep_checkpoints,
        tokenizer_bytes=tok_bytes,
        history_steps=meta.steps,
        threads=threads,
        probe_result=result,
        cached=cached,
        epochs=steps // max(1, bpe),
        checkpoint_interval=tc.checkpoint_interval,
    )
    est.extra = {"batches_per_epoch": bpe, "target_epochs": target, "epochs_trained": trained}
    return est
