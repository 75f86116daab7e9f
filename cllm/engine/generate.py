"""Sampling with a key-value cache: tokens stream out one at a time and can be stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np

from cllm.errors import ValidationError


def sample_next(
    logits: np.ndarray,
    temperature: float,
    top_k: int,
    top_p: float,
    rng: np.random.Generator,
) -> int:
    """One token id from logits [V]: greedy at temperature 0, else top-k then top-p (nucleus).

    Sorting a whole vocabulary costs more than a small model's step (150 us at 4,096 tokens, ms
    at GPT-2's 50,257), and so does a running sum over it, so neither is done where it need not
    be: without top-k and top-p the draw is made over the tokens in id order, a block at a time
    (``_draw``); a nucleus without top-k is looked for among the most likely 256 tokens first,
    then 4,096, sorting the whole vocabulary only when it lies in neither."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = np.asarray(logits)
    z = z / z.dtype.type(temperature) if z.dtype == np.float32 else z / np.float64(temperature)
    V = z.size
    if 0 < top_k < V:
        cand = np.argpartition(-z, top_k - 1)[:top_k]
        e = _exp32(z[cand] - z[cand].max()).astype(np.float64)
        total = e.sum()
    else:
        e = _exp32(z - z.max())
        if not 0 < top_p < 1:  # the whole distribution: no order needed
            return _draw(e, rng.random())
        e = e.astype(np.float64)
        total, cand, m = e.sum(), np.arange(V), NUCLEUS_FIRST
        while m < V:
            top = np.sort(np.argpartition(-z, m - 1)[:m])  # (by id: ties sort as they would)
            if e[top].sum() >= top_p * total:  # the nucleus is among them
                cand = top
                break
            m *= 16
        e = e[cand]
    order = np.argsort(-z[cand], kind="stable")  # most likely first
    cand = cand[order]
    cum = np.cumsum(e[order]) / total
    if 0 < top_p < 1:
        # the smallest prefix whose mass reaches top_p
        n = min(int(np.searchsorted(cum, top_p)) + 1, cum.size)
        cum = cum[:n]
    i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return int(cand[min(i, cum.size - 1)])


NUCLEUS_FIRST = 256  # candidates looked at first for a nucleus without top-k


def _exp32(x: np.ndarray) -> np.ndarray:
    """exp in float32 (NumPy vectorises it; its float64 exp is three times slower here): the
    weights of a draw need no more, while the order of the logits keeps their own precision."""
    return np.exp(x.astype(np.float32, copy=False))
_BLOCK = 64


def _draw(e: np.ndarray, u: float) -> int:
    """The token whose stretch of the running sum of weights ``e`` holds u * sum(e), u in [0, 1):
    one block's running sum, found from the blocks' sums."""
    starts = np.arange(0, e.size, _BLOCK)
    blocks = np.cumsum(np.add.reduceat(e, starts), dtype=np.float64)
    target = u * blocks[-1]
    b = min(int(np.searchsorted(blocks, target, side="right")), blocks.size - 1)
    seg = e[starts[b] : starts[b] + _BLOCK]
    run = np.cumsum(seg, dtype=np.float64)
    i = int(np.searchsorted(run, target - (blocks[b - 1] if b else 0.0), side="right"))
    # rounding between the two sums must not land past the block's last token of any weight
    return int(starts[b] + min(i, int(np.flatnonzero(seg)[-1])))


def penalize_repeats(logits: np.ndarray, context: Sequence[int], penalty: float) -> np.ndarray:
    """The CTRL paper's repetition penalty (as transformers applies it): the logit of each token
    seen in ``context`` is divided by ``penalty`` when positive and multiplied when negative, so
    a seen token's probability falls whatever its sign. Returns a new array."""
    out = np.array(logits, dtype=np.float32, copy=True)
    seen = np.unique(np.asarray(context, dtype=np.int64))
    if seen.size:
        v = out[seen]
        out[seen] = np.where(v > 0, v / penalty, v * penalty)
    return out


def sample_stream(
    gpt,
    prompt_ids: Sequence[int] | np.ndarray,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 0.9,
    seed: int | None = None,
    eot_id: int | None = None,
    stop: threading.Event | None = None,
    repetition_penalty: float = 1.0,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new token ids after ``prompt_ids``.

    Each new token costs one position through the KV cache. A prompt longer than the context keeps
    its last tokens; when the cache is full the window slides (the last half is run again).
    Stops early at ``eot_id`` (not yielded) or as soon as ``stop`` is set. A
    ``repetition_penalty`` above 1 makes every token already in the window less likely
    (``penalize_repeats``).
    """
    C = gpt.config.block_size
    ctx = [int(t) for t in np.asarray(prompt_ids).reshape(-1)][-C:]
    if not ctx:
        if eot_id is None:
            raise ValidationError("the prompt is empty")
        ctx = [int(eot_id)]
    rng = np.random.default_rng(seed)
    cache = gpt.new_cache(1)
    logits = gpt.decode(np.array([ctx], np.int32), cache, last=True)[0, -1]
    for n in range(max_new_tokens):
        if stop is not None and stop.is_set():
            return
        if repetition_penalty != 1.0:
            logits = penalize_repeats(logits, ctx, repetition_penalty)
        tok = sample_next(logits, temperature, top_k, top_p, rng)
        if eot_id is not None and tok == eot_id:
            return
        yield tok
        if n == max_new_tokens - 1:
            return
        ctx.append(tok)
        if cache.pos >= C:  # the context is full: keep the last half and run it again
            ctx = ctx[-(C // 2) :] if C > 1 else ctx[-1:]
            cache = gpt.new_cache(1)
            logits = gpt.decode(np.array([ctx], np.int32), cache, last=True)[0, -1]
        else:
            logits = gpt.decode(np.array([[tok]], np.int32), cache)[0, -1]
