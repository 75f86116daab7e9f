"""Batched decoding: streams of different lengths, joining and leaving between steps, give the
tokens each stream gets alone."""

import numpy as np
import pytest

from cllm.engine.batch import BatchDecoder, generate_batch
from cllm.engine.config import GPTConfig
from cllm.engine.generate import sample_stream
from cllm.engine.model import GPT
from cllm.errors import ValidationError

CFG = GPTConfig(vocab_size=37, n_embd=16, n_layer=2, n_head=2, block_size=24)


@pytest.fixture(scope="module")
def gpt():
    g = GPT(CFG, seed=3, threads=2)
    g.params *= 15  # peaked distributions: greedy choices are not near-ties
    return g


def alone(gpt, prompt, n, **kw):
    return list(sample_stream(gpt, prompt, n, temperature=0.0, top_k=0, top_p=1.0, **kw))


def test_greedy_batched_equals_single_streams(gpt):
    rng = np.random.default_rng(0)
    # prompts of different lengths, more prompts than slots (so streams join as others leave),
    # one longer than the context (its start is dropped) and runs past it (the window slides)
    prompts = [rng.integers(0, 37, n).tolist() for n in (1, 5, 11, 3, 30, 7, 2)]
    lengths = [9, 4, 30, 12, 6, 1, 20]
    got = [
        generate_batch(gpt, [p], n, max_streams=3)[0] for p, n in zip(prompts, lengths, strict=True)
    ]  # one at a time through the batch decoder
    want = [alone(gpt, p, n) for p, n in zip(prompts, lengths, strict=True)]
    assert got == want
    dec = BatchDecoder(gpt, max_streams=3)
    out, owner, queue = {}, {}, list(range(len(prompts)))
    while queue or dec.active:
        while queue and dec.free_slots:
            i = queue.pop(0)
            owner[dec.add(prompts[i], lengths[i], temperature=0.0)] = i
            out[i] = []
        for ev in dec.step():
            out[owner[ev.stream]].append(ev.token)
            assert ev.done == (len(out[owner[ev.stream]]) == lengths[owner[ev.stream]])
    assert [out[i] for i in range(len(prompts))] == want


def test_end_of_text_and_cancel_free_slots(gpt):
    prompt = [1, 2, 3]
    first = alone(gpt, prompt, 12)
    k = next(i for i in range(1, 12) if first[i] not in first[:i])
    eot = first[k]  # its first appearance ends the stream, after k tokens
    dec = BatchDecoder(gpt, max_streams=2)
    a = dec.add(prompt, 10, temperature=0.0, eot_id=eot)
    b = dec.add([4, 5], 10, temperature=0.0)
    with pytest.raises(ValidationError, match="busy"):
        dec.add([6], 3)
    events = [dec.step() for _ in range(k + 1)]
    assert [e.token for ev in events[:k] for e in ev if e.stream == a] == first[:k]
    last = [e for e in events[k] if e.stream == a][0]
    assert last.token is None and last.done and last.reason == "stop"
    assert dec.active == 1 and dec.free_slots == 1
    dec.cancel(b)
    assert dec.active == 0 and dec.free_slots == 2
    assert dec.step() == []


def test_sampling_per_stream_follows_its_seed(gpt):
    prompts = [[1, 2], [3], [4, 5, 6]]
    got = generate_batch(gpt, prompts, 8, max_streams=3, temperature=1.0, top_k=0, seed=10)
    for i, p in enumerate(prompts):
        want = list(sample_stream(gpt, p, 8, temperature=1.0, top_k=0, top_p=1.0, seed=10 + i))
        assert got[i] == want


def test_step_refuses_bad_rows(gpt):
    cache = gpt.new_cache(2)
    with pytest.raises(ValidationError):
        gpt.step([1, 2], cache, [0, 0], [0, 0])  # one slot twice
    with pytest.raises(ValidationError):
        gpt.step([1], cache, [2], [0])
    with pytest.raises(ValidationError):
        gpt.step([1], cache, [0], [CFG.block_size])
    with pytest.raises(ValidationError):
        gpt.step([CFG.vocab_size], cache, [0], [0])


# Shapes that take every path of the batched kernels: D 64 with 8 heads (head size 8: vector
# attention in float32 and float64; 3D, D and 4D all whole register tiles) and D 20 with 2 heads
# (head size 10: the scalar attention; outputs past the last whole tile, the one-row loop's).
SHAPES = [
    GPTConfig(vocab_size=53, n_embd=64, n_layer=2, n_head=8, block_size=40),
    GPTConfig(vocab_size=37, n_embd=20, n_layer=2, n_head=2, block_size=24),
]


def _filled_cache(gpt, n, rng):
    """A cache of n slots holding prompts of different lengths; returns it and the lengths."""
    cache = gpt.new_cache(n)
    lengths = rng.integers(1, gpt.config.block_size // 2, n)
    for s in range(n):
        gpt.prefill(rng.integers(0, gpt.config.vocab_size, lengths[s]), cache, s)
    return cache, lengths


@pytest.mark.parametrize("cfg", SHAPES, ids=["tiles", "tails"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_batched_step_logits_equal_single_rows_exactly(cfg, dtype, threads):
    """Every row of a batched step shared out by rows (register tiles of 4 rows over the
    panels, rows shared out among threads) gives bit for bit the logits that row gets in a
    step of its own (the one-row loop)."""
    gpt = GPT(cfg, seed=5, dtype=dtype, threads=threads)
    gpt.step_split = "rows"
    rng = np.random.default_rng(1)
    for n in (2, 3, 4, 5, 8, 9):
        cache, lengths = _filled_cache(gpt, n, rng)
        alone = [gpt.new_cache(1) for _ in range(n)]
        for s in range(n):
            alone[s].k[:, 0], alone[s].v[:, 0] = cache.k[:, s], cache.v[:, s]
        order = rng.permutation(n)  # slots in any order
        toks = rng.integers(0, cfg.vocab_size, n)
        got = gpt.step(toks, cache, order, lengths[order])
        for r, s in enumerate(order):
            want = gpt.step(toks[r : r + 1], alone[s], [0], [lengths[s]])[0]
            assert np.array_equal(got[r], want), (n, r)
        assert np.array_equal(cache.k[:, order[0]], alone[order[0]].k[:, 0])


@pytest.mark.parametrize("cfg", SHAPES, ids=["tiles", "tails"])
def test_batched_step_matches_the_full_forward(cfg):
    """Batched decoding, token by token, against the plain forward pass over the whole text
    (float64: only the order of the sums differs)."""
    gpt = GPT(cfg, seed=2, dtype=np.float64, threads=2)
    rng = np.random.default_rng(3)
    n, T = 6, 12
    ids = rng.integers(0, cfg.vocab_size, (n, T))
    full = gpt.forward(ids)
    cache = gpt.new_cache(n)
    for s in range(n):
        gpt.prefill(ids[s, :1], cache, s)
    for t in range(1, T):
        out = gpt.step(ids[:, t], cache, np.arange(n), np.full(n, t))
        np.testing.assert_allclose(out, full[:, t], rtol=0, atol=1e-11)


def test_linear_panels_match_matmul():
    from numba import njit

    from cllm.engine import kernels as K
    from cllm.engine.quant import pack_panels

    @njit
    def linear(out, x, W, b, P, c0, c1):  # the one-row loop of a float step
        K._linear(out, x, W, b[:1], 0, 0, b, P, 0, c0, c1, b, b, np.empty((0, 2), np.int64))

    rng = np.random.default_rng(4)
    for n, I, O in [(2, 16, 48), (3, 7, 33), (5, 40, 16), (8, 64, 200), (9, 1, 17), (4, 30, 5)]:
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((n, I)).astype(dtype)
            W = rng.standard_normal((I, O)).astype(dtype)
            b = rng.standard_normal(O).astype(dtype)
            lanes = 32 // np.dtype(dtype).itemsize
            P = pack_panels(W, lanes)
            C = K.PANEL_LANES * lanes  # one panel's columns
            assert P.size == I * (O - O % C)
            out = np.full((n, O), np.nan, dtype)
            kv = rng.standard_normal(64).astype(dtype)  # something to prefetch meanwhile
            ranges = np.array([[0, 40], [50, 64]])
            K._linear_panels(out, x, P, W.reshape(-1), b, 0, O, kv, kv, ranges)
            want = x.astype(np.float64) @ W + b
            tol = 1e-4 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
            one = np.full((1, O), np.nan, dtype)  # a row alone sums in the same order
            for r in range(n):
                linear(one, x[r : r + 1], W.reshape(-1), b, P, 0, O)
                assert np.array_equal(one[0], out[r])
            cuts = sorted({0, O, *range(0, O, C)[1:3], O - O % C})
            part = np.full((n, O), np.nan, dtype)
            for c0, c1 in zip(cuts, cuts[1:], strict=False):  # column ranges, one at a time
                K._linear_panels(part, x, P, W.reshape(-1), b, c0, c1, kv, kv, ranges[:1])
                assert np.isnan(part[:, c1:]).all()
            assert np.array_equal(part, out)


def _same_logits(a, b):
    """Logits of one stream by two paths: equal, or (float32 shared out by columns, see the
    column split's test below) within rounding."""
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_panels_follow_the_parameters():
    """Several float rows read a panel copy of the matrices; after the parameters change in
    place (a load, an optimizer step) the next step reads panels of the new ones."""
    from cllm.engine.optim import AdamW

    cfg = SHAPES[0]
    gpt = GPT(cfg, seed=1, threads=2)
    rows = ([1, 2], [0, 1], [0, 0])  # tokens, slots, positions

    def logits(model):  # two streams' first tokens, on a fresh cache
        return model.step(rows[0], model.new_cache(2), rows[1], rows[2])

    def differ(a, b):  # far more than rounding
        return np.abs(a - b).max() > 1e-3

    before = logits(gpt)
    other = GPT(cfg, seed=2, threads=2)
    gpt.params[:] = other.params  # a load into the same buffer
    _same_logits(logits(gpt), logits(other))
    assert differ(logits(gpt), before)
    rng = np.random.default_rng(0)
    grads = rng.standard_normal(gpt.n_params).astype(gpt.dtype)
    AdamW.for_model(gpt).step(gpt.params, grads, lr=1e-3)
    fresh = GPT(cfg, seed=3, threads=2)
    fresh.params[:] = gpt.params
    _same_logits(logits(gpt), logits(fresh))
    assert differ(logits(gpt), logits(other))
    # the head has panels too (its transpose, whole panels of 16 columns): a change of the
    # token embedding alone is seen
    pw, poffs, hp = gpt.decode_weights().panel_weights()
    V, D = cfg.vocab_size, cfg.n_embd
    assert hp.size == (V - V % 16) * D
    gpt.p["wte"][:] = other.p["wte"] * 3
    fresh = GPT(cfg, seed=4, threads=2)  # no panels yet
    fresh.params[:] = gpt.params
    _same_logits(logits(gpt), logits(fresh))


def _logits_alone(gpt, prompt, tokens):
    """The logits a stream sees alone after its prompt and after each of ``tokens``."""
    cache = gpt.new_cache(1)
    out = [gpt.decode(np.array([prompt]), cache, last=True)[0, -1]]
    for t in tokens:
        out.append(gpt.decode(np.array([[t]]), cache)[0, -1])
    return out


@pytest.mark.parametrize("quant", ["none", "int8"])
def test_joining_and_leaving_streams_see_their_own_logits(quant):
    """Streams join and leave between steps; after every step each active stream's logits are
    those it gets alone (float and int8 weights; on 2 threads, float steps of several streams
    are shared out by columns)."""
    cfg = SHAPES[0]
    gpt = GPT(cfg, seed=7, threads=2)
    gpt.set_quant(quant)
    rng = np.random.default_rng(5)
    prompts = [rng.integers(0, cfg.vocab_size, n).tolist() for n in (3, 9, 1, 6, 4, 12, 2)]
    lengths = [5, 2, 9, 3, 7, 4, 6]
    dec = BatchDecoder(gpt, max_streams=4)
    seen, owner, queue = {}, {}, list(range(len(prompts)))
    while queue or dec.active:
        if queue and dec.free_slots and rng.random() < 0.6:  # join at uneven times
            i = queue.pop(0)
            sid = dec.add(prompts[i], lengths[i], temperature=0.0)
            owner[sid], seen[i] = i, [dec._streams[sid].logits.copy()]
        if not dec.active:
            continue
        for ev in dec.step():
            i = owner[ev.stream]
            if not ev.done:
                seen[i].append(dec._streams[ev.stream].logits.copy())
    for i, p in enumerate(prompts):
        toks = alone(gpt, p, lengths[i])
        want = _logits_alone(gpt, p, toks[:-1])
        assert len(seen[i]) == len(want) == lengths[i]
        for a, b in zip(seen[i], want, strict=True):
            _same_logits(a, b)


# A step shared out by output columns (kernels.decode_part on several threads at once, meeting
# at barriers) gives every row the logits of a one-thread step to rounding: float weights take
# the head from its panels there (another order of the same sums; V 53 and 37 leave columns past
# the last whole panel, which go by the head's rows). Before that head they were meant to be the
# same bit for bit, and were in some 2,000 comparisons of a stress loop, but two full-suite runs
# saw a float case differ (cause not found). A read of a value another thread had not yet
# written would be far outside the tolerance.
@pytest.mark.parametrize("cfg", SHAPES, ids=["tiles", "tails"])
@pytest.mark.parametrize(
    "dtype,quant", [(np.float32, "none"), (np.float64, "none"), (np.float32, "int8")]
)
def test_column_split_step_equals_one_thread(cfg, dtype, quant):
    one = GPT(cfg, seed=5, dtype=dtype, threads=1)
    one.set_quant(quant)
    rng = np.random.default_rng(2)
    for parts in (2, 3):
        split = GPT(cfg, seed=5, dtype=dtype, threads=parts)
        split.set_quant(quant)
        split.step_split = "columns"
        for n in range(1, 10):
            cache, lengths = _filled_cache(one, n, rng)
            other = one.new_cache(n)
            other.k[:], other.v[:] = cache.k, cache.v
            order = rng.permutation(n)
            toks = rng.integers(0, cfg.vocab_size, n)
            want = one.step(toks, cache, order, lengths[order])
            got = split.step(toks, other, order, lengths[order])
            tol = dict(rtol=1e-5, atol=1e-6) if got.dtype == np.float32 else dict(rtol=1e-12)
            np.testing.assert_allclose(got, want, **tol, err_msg=f"{parts} parts, {n} rows")
            np.testing.assert_allclose(other.k, cache.k, **tol)
            np.testing.assert_allclose(other.v, cache.v, **tol)


def test_auto_split_by_columns_for_float_rows_and_big_int8_weights(monkeypatch):
    """Step split "auto" shares a step out by columns for 2 or more rows of float weights (from
    their panels), and for int8 weights of SPLIT_MIN_BYTES or more (one row too); by rows for
    one float row and for small int8 weights."""
    from cllm.engine import model as M

    gpt = GPT(SHAPES[0], seed=1, threads=2)
    cache = gpt.new_cache(2)
    gpt.step([1], cache, [0], [0])  # one float row: rows, one thread
    assert (0, 1) in cache.scratch and not any(k[0] == "columns" for k in cache.scratch)
    gpt.step([1, 2], cache, [0, 1], [0, 0])  # two: columns, from the panels
    assert ("columns", 2, 2) in cache.scratch
    cache.scratch.clear()
    gpt.set_quant("int8")
    gpt.step([3], cache, [0], [1])  # int8 below the size: rows
    assert not any(k[0] == "columns" for k in cache.scratch)
    dw = gpt.decode_weights()
    monkeypatch.setattr(M, "SPLIT_MIN_BYTES", dw.wq.nbytes + dw.head.nbytes)
    one = gpt.step([4], cache, [0], [2])
    assert ("columns", 1, 2) in cache.scratch  # one stream shared out by columns
    gpt.threads = 1
    np.testing.assert_array_equal(gpt.step([4], cache, [0], [2]), one)  # the same logits


def _decode_part_args(gpt, n, cache, parts):
    from cllm.engine import kernels as K

    dw, cfg = gpt.decode_weights(), gpt.config
    bar, shared, own = cache.split_scratch(cfg, n, parts, gpt.dtype)
    bar[:] = 0
    logits = np.zeros((n, cfg.vocab_size), gpt.dtype)
    toks, slots, pos = np.arange(n), np.arange(n), np.zeros(n, np.int64)

    def args(part):
        return (
            part, parts, bar, toks, slots, pos, dw.wpe, dw.blocks, dw.offs, dw.wq, dw.woffs,
            dw.sq, dw.soffs, *(dw.panel_weights() if n > 1 else dw.no_panels), dw.head,
            dw.head_s, dw.lnf_w, dw.lnf_b, cache.k, cache.v, *own[part], *shared, logits,
        )  # fmt: skip

    return K, bar, args, logits


def test_barriers_hold_when_a_part_has_nothing_to_do():
    """One head, one row and D 16 (one 16-wide tile): the first thread has no attention and no
    columns at all; both still pass the same barriers, and the step ends with the logits of one
    thread."""
    import threading

    cfg = GPTConfig(vocab_size=9, n_embd=16, n_layer=2, n_head=1, block_size=8)
    gpt = GPT(cfg, seed=4, threads=2)
    want = gpt.step([0], gpt.new_cache(1), [0], [0])
    K, bar, args, logits = _decode_part_args(gpt, 1, gpt.new_cache(1), 2)
    assert K._units(np.zeros(1, np.int64), 1, 0, 2) == (0, 0)  # part 0: no attention
    assert K._cols(16, 0, 2, 16) == (0, 0)  # and no columns
    t = threading.Thread(target=K.decode_part, args=args(1), daemon=True)
    t.start()
    K.decode_part(*args(0))
    t.join(timeout=60)
    assert not t.is_alive()
    assert np.array_equal(logits, want)
    assert bar[0] == 2 * 6 * cfg.n_layer  # six barriers a layer, both threads at each


def test_a_part_that_never_comes_is_released_by_the_abort_flag():
    import threading

    gpt = GPT(SHAPES[0], seed=4, threads=2)
    K, bar, args, _ = _decode_part_args(gpt, 2, gpt.new_cache(2), 2)
    t = threading.Thread(target=K.decode_part, args=args(0), daemon=True)
    t.start()  # its partner never starts: it waits at the first barrier
    t.join(timeout=0.5)
    assert t.is_alive()
    bar[K.BARRIER_ABORT] = 1
    t.join(timeout=60)
    assert not t.is_alive()


def test_a_failing_part_releases_its_partner(monkeypatch):
    from cllm.engine import kernels as K

    gpt = GPT(SHAPES[0], seed=4, threads=2)
    gpt.step_split = "columns"
    cache = gpt.new_cache(2)
    real = K.decode_part_signal

    def flaky(flag, done, part, *a):
        if part == 1:
            raise RuntimeError("part 1 failed")
        return real(flag, done, part, *a)

    monkeypatch.setattr(K, "decode_part_signal", flaky)
    with pytest.raises(RuntimeError, match="part 1 failed"):
        gpt.step([1, 2], cache, [0, 1], [0, 0])
    monkeypatch.setattr(K, "decode_part_signal", real)  # the team goes on with the next step
    want = GPT(SHAPES[0], seed=4, threads=1).step([1, 2], gpt.new_cache(2), [0, 1], [0, 0])
    _same_logits(gpt.step([1, 2], cache, [0, 1], [0, 0]), want)


def test_repetition_penalty_and_sampling_as_a_stream_alone(gpt):
    """A stream with a repetition penalty, sampled with a seed, beside others, gets the tokens
    sample_stream gives it alone (the penalty counts the window the stream itself sees)."""
    kw = dict(temperature=0.9, top_k=0, top_p=0.95, seed=4, repetition_penalty=1.7)
    want = list(sample_stream(gpt, [3, 1, 3], 30, **kw))  # 30 tokens: the window slides
    plain = list(sample_stream(gpt, [3, 1, 3], 30, **{**kw, "repetition_penalty": 1.0}))
    assert want != plain  # the penalty changes the text, so the comparison below means something
    dec = BatchDecoder(gpt, max_streams=3)
    dec.add([5, 6], 25, temperature=0.0)
    sid = dec.add([3, 1, 3], 30, **kw)
    dec.add([7], 8, temperature=1.0, seed=1)
    got = []
    while dec.active:
        got += [ev.token for ev in dec.step() if ev.stream == sid]
    assert got == want
