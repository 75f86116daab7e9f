"""Sampling with a key-value cache: tokens stream out one at a time and can be stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from numba import njit

from cllm.engine.kernels import _cast, _exp
from cllm.errors import ValidationError


def sample_next(
    logits: np.ndarray,
    temperature: float,
    top_k: int,
    top_p: float,
    rng: np.random.Generator,
    context: Sequence[int] | np.ndarray | None = None,
    penalty: float = 1.0,
) -> int:
    """One token id from logits [V]: greedy at temperature 0, else top-k then top-p (nucleus).
    With ``context`` and a ``penalty`` other than 1, the tokens seen in it are made less likely
    first (``penalize_repeats``). A sampled token takes one ``rng.random()``.

    The work is one compiled call (``_sample``) that keeps the interpreter lock. As a dozen NumPy
    calls over the vocabulary it handed the lock to any other thread at each one and waited to get
    it back: in the server, whose event loop wants it for every token it sends, sampling one
    stream at temperature 1 took 0.6 ms a token where it takes 55 us alone (small preset, V 4,096,
    2 cores), a third of the stream's speed.

    Sorting a whole vocabulary costs more than a small model's step, so it is not done where it
    need not be: without top-k and top-p the draw is made over the tokens in id order; top-k keeps
    the k best in a heap; a nucleus without top-k is looked for among the most likely 256 tokens
    first, sorting the whole vocabulary only when it is not among them. The kernels are our own
    loops: NumPy's partition and argsort, compiled by numba, made the first call wait 17 s
    (now 4-6 s, once: numba caches it)."""
    z = np.asarray(logits)
    if z.dtype != np.float32 and z.dtype != np.float64:
        z = z.astype(np.float64)
    seen = _NO_IDS if context is None or penalty == 1.0 else _ids(context)
    u = rng.random() if temperature > 0 else 0.0
    z = np.ascontiguousarray(z.reshape(-1))
    return int(_sample(z, seen, float(penalty), float(temperature), int(top_k), float(top_p), u))


NUCLEUS_FIRST = 256  # candidates looked at first for a nucleus without top-k, before all
_NO_IDS = np.zeros(0, np.int64)


def _ids(context) -> np.ndarray:
    return np.asarray(context, dtype=np.int64).reshape(-1)


@njit(cache=True, error_model="numpy")
def _penalize(z, seen, penalty):
    """penalize_repeats in place on z, for the ids in ``seen`` (repeats allowed, each id once)."""
    done = np.zeros(z.size, np.bool_)
    p = _cast(z[0], penalty)
    for t in seen:
        if 0 <= t < z.size and not done[t]:
            done[t] = True
            v = z[t]
            z[t] = v / p if v > 0 else v * p
    return z


@njit(inline="always")
def _worse(z, a, b):
    """Token a ranks below token b: less likely, or as likely and a later id."""
    return z[a] < z[b] or (z[a] == z[b] and a > b)


@njit(cache=True, error_model="numpy")
def _top(z, m):
    """The ids of the m most likely tokens of z, most likely first, ties by id: one pass with a
    heap of the m best so far (its root the worst of them), which most tokens fail to enter, then
    the heap emptied worst first (top 50 of V 4,096: 24 us a draw, against 42 us with NumPy's
    argpartition)."""
    m = min(m, z.size)
    h = np.empty(m, np.int64)
    for i in range(m):  # the first m, sifted up
        h[i] = i
        c = i
        while c > 0:
            p = (c - 1) // 2
            if _worse(z, h[c], h[p]):
                h[c], h[p] = h[p], h[c]
                c = p
            else:
                break
    for i in range(m, z.size):
        if z[i] > z[h[0]]:  # (a tie is a later id: never better than the root)
            h[0] = i
            _sift_down(z, h, 0, m)
    out = np.empty(m, np.int64)
    for n in range(m, 0, -1):
        out[n - 1] = h[0]
        h[0] = h[n - 1]
        _sift_down(z, h, 0, n - 1)
    return out


@njit(inline="always")
def _sift_down(z, h, c, n):
    while True:
        w, left = c, 2 * c + 1
        if left < n and _worse(z, h[left], h[w]):
            w = left
        if left + 1 < n and _worse(z, h[left + 1], h[w]):
            w = left + 1
        if w == c:
            return
        h[c], h[w] = h[w], h[c]
        c = w


@njit(inline="always")
def _weight(x):
    """exp(x) for x <= 0, and exactly 0 for a token of no weight (-inf: _exp clamps at -87)."""
    return _exp(x) if x > -87 else _cast(x, 0.0)


# reassoc lets the sums vectorize; not fastmath's "no infinities", as -inf logits are tokens of no
# weight and an all -inf row must be seen as one
@njit(cache=True, fastmath={"reassoc", "contract", "arcp", "nsz"}, error_model="numpy")
def _sample(logits, seen, penalty, temperature, top_k, top_p, u):
    """sample_next's work (see there), u the uniform draw in [0, 1)."""
    V = logits.size
    z = logits.copy()
    total = 0.0
    if penalty != 1.0 and seen.size:
        _penalize(z, seen, penalty)
    if temperature <= 0:
        return np.argmax(z)
    t = _cast(z[0], temperature)
    for i in range(V):
        z[i] = z[i] / t
    mx = z.max()
    if not -np.inf < mx < np.inf:  # every logit -inf (or a nan): as greedy would
        return np.argmax(z)
    if 0 < top_k < V:
        cand = _top(z, top_k)
    else:
        e = np.empty(V, np.float64)
        for i in range(V):
            e[i] = _weight(z[i] - mx)
            total += e[i]
        if not 0 < top_p < 1:  # the whole distribution, in id order: no order needed
            target, run, last = u * total, 0.0, 0
            for i in range(V):
                if e[i] > 0:
                    run += e[i]
                    last = i
                    if run > target:
                        return i
            return last  # rounding put the target past the sum
        cand = _top(z, NUCLEUS_FIRST)  # the nucleus among the most likely few?
        mass = 0.0
        for i in cand:
            mass += e[i]
        if mass < top_p * total:
            cand = _sort_all(z)
    cum = np.empty(cand.size, np.float64)
    run = 0.0
    for j in range(cand.size):
        run += _weight(z[cand[j]] - mx)
        cum[j] = run
    n = cand.size
    if 0 < top_p < 1:  # the smallest prefix whose mass reaches top_p (of all, or of the top k)
        whole = run if 0 < top_k < V else total
        n = 1
        while n < cand.size and cum[n - 1] < top_p * whole:
            n += 1
    target = u * cum[n - 1]
    for j in range(n - 1):  # the first whose running sum passes the target
        if cum[j] > target:
            return cand[j]
    return cand[n - 1]


@njit(cache=True, error_model="numpy")
def _sort_all(z):
    """Every id, most likely first, ties by id: a stable merge sort of (key, id) pairs from runs
    of 16 sorted by insertion (the keys side by side, not looked up through the ids)."""
    n = z.size
    k, ids = -z, np.arange(n)
    k2, ids2 = np.empty_like(k), np.empty_like(ids)
    for s in range(0, n, 16):
        for i in range(s + 1, min(s + 16, n)):
            kc, ic, j = k[i], ids[i], i - 1
            while j >= s and k[j] > kc:
                k[j + 1], ids[j + 1] = k[j], ids[j]
                j -= 1
            k[j + 1], ids[j + 1] = kc, ic
    w = 16
    while w < n:
        for lo in range(0, n, 2 * w):
            mid, hi = min(lo + w, n), min(lo + 2 * w, n)
            i, j = lo, mid
            for o in range(lo, hi):
                if j >= hi or (i < mid and k[i] <= k[j]):  # equal keys: the left one first
                    k2[o], ids2[o] = k[i], ids[i]
                    i += 1
                else:
                    k2[o], ids2[o] = k[j], ids[j]
                    j += 1
        k, k2, ids, ids2 = k2, k, ids2, ids
        w *= 2
    return ids


def penalize_repeats(logits: np.ndarray, context: Sequence[int], penalty: float) -> np.ndarray:
    """The CTRL paper's repetition penalty (as transformers applies it): the logit of each token
    seen in ``context`` is divided by ``penalty`` when positive and multiplied when negative, so
    a seen token's probability falls whatever its sign. Returns a new array (float32)."""
    out = np.array(logits, dtype=np.float32, copy=True).reshape(-1)
    return _penalize(out, _ids(context), float(penalty)).reshape(np.shape(logits))


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
        tok = sample_next(logits, temperature, top_k, top_p, rng, ctx, repetition_penalty)
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
