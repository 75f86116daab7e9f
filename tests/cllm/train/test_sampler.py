"""The batch sources: windows read right, token-weighted frequencies, determinism, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.errors import CLLMError
from cllm.train.sampler import (
    SequentialStream,
    TokenSource,
    VirtualStream,
    WindowSampler,
    item_weight,
    validation_batches,
)
from cllm.train.trainer import Trainer

from .test_trainer import TEXTS, make_model, run, wait_for

EOT = -1


class ArraySource:
    """A TokenSource stand-in over in-memory arrays (the real one reads files)."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def segment(self, item_id, lo, hi):
        return self.data[item_id][lo:hi]


def _flat(data, segs):
    return np.concatenate([np.append(data[s[0]][s[1] : s[2]], EOT) for s in segs])


@settings(max_examples=60, deadline=None)
@given(
    lens=st.lists(st.integers(0, 30), min_size=1, max_size=6),
    a=st.integers(0, 200),
    n=st.integers(1, 40),
)
def test_virtual_stream_reads_the_concatenation(lens, a, n):
    data = {i: np.arange(100 * i, 100 * i + m, dtype=np.int32) for i, m in enumerate(lens)}
    segs = [(i, min(2, m), m) for i, m in enumerate(lens)]
    flat = _flat(data, segs)
    vs = VirtualStream(ArraySource(data), segs, EOT)
    assert vs.length == flat.size
    if a + n <= flat.size:
        np.testing.assert_array_equal(vs.read(a, n), flat[a : a + n])


def test_windows_are_slices_of_the_stream_and_deterministic():
    data = {1: np.arange(0, 500, dtype=np.int32), 2: np.arange(1000, 1100, dtype=np.int32)}
    segs = [(1, 0, 450, 1.0), (2, 0, 90, 1.0)]
    flat = _flat(data, segs)
    ws = WindowSampler(ArraySource(data), segs, EOT, 8, 16)
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(20):
        x, y = ws.batch(r1)
        x2, y2 = ws.batch(r2)
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
        for row_x, row_y in zip(x, y, strict=True):
            a = int(np.flatnonzero(flat == row_x[0])[0])
            np.testing.assert_array_equal(row_x, flat[a : a + 16])
            np.testing.assert_array_equal(row_y, flat[a + 1 : a + 17])


def test_token_weighted_frequencies():
    """Each possible start is drawn with probability weight / total mass: a chi-square test over
    the items (fixed seed), and every start of the stream possible, none past the last."""
    sizes, weights = [4000, 1000, 250, 2000], [1.0, 1.0, 1.0, 3.0]  # the last has priority 2
    data = {i: np.zeros(n, np.int32) for i, n in enumerate(sizes)}
    segs = [(i, 0, n, w) for i, (n, w) in enumerate(zip(sizes, weights, strict=True))]
    T = 32
    ws = WindowSampler(ArraySource(data), segs, EOT, 64, T)
    rng = np.random.default_rng(1234)
    starts = np.concatenate([ws.starts(rng) for _ in range(2000)])  # 128,000 draws
    bounds = ws.stream.starts
    assert starts.min() >= 0 and starts.max() <= ws.stream.length - T - 1
    counts = np.bincount(np.searchsorted(bounds, starts, side="right") - 1, minlength=len(sizes))
    mass = ws.n_starts * np.array(weights)
    expected = starts.size * mass / mass.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27, (counts, expected)  # p = 0.001 for 3 degrees of freedom
    # and uniform inside an item: the first and second halves of item 0 within 2%
    inside = starts[starts < bounds[1]]
    half = np.mean(inside < bounds[1] / 2)
    assert abs(half - 0.5) < 0.02


def test_item_weight_and_epoch_length():
    assert item_weight(0) == item_weight(-3) == 1.0 and item_weight(2) == 3.0
    segs = [(1, 0, 1000), (2, 0, 25)]
    assert WindowSampler.batches_per_epoch(segs, 4, 16) == math.ceil(1025 / 64)
    assert WindowSampler.batches_per_epoch([(1, 0, 5)], 4, 16) == 0  # not one window
    assert SequentialStream.batches_per_epoch(segs, 4, 16) == (1027 - 16) // 64


def test_too_few_tokens_refused():
    ws = WindowSampler(ArraySource({1: np.zeros(3, np.int32)}), [(1, 0, 3)], EOT, 2, 8)
    with pytest.raises(CLLMError, match="too few"):
        ws.batch(np.random.default_rng(0))


def test_validation_batches_fixed_and_whole():
    data = {1: np.arange(300, dtype=np.int32)}
    vb = validation_batches(ArraySource(data), [(1, 200, 300)], EOT, 2, 8, 3)
    assert len(vb) == 3 and all(x.shape == (2, 8) for x, _ in vb)
    again = validation_batches(ArraySource(data), [(1, 200, 300)], EOT, 2, 8, 3)
    for (x, y), (x2, y2) in zip(vb, again, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    assert validation_batches(ArraySource(data), [], EOT, 2, 8, 3) == []


def test_token_source_reads_files_and_reports_damage(tmp_path):
    reg = make_model(tmp_path)
    dq = reg.queue("m")
    try:
        src = TokenSource(dq)
        small = dq.items()[0]  # small items live in the queue's index
        assert dq.token_file(small.id)[0] is None
        np.testing.assert_array_equal(src.segment(small.id, 3, 20), dq.tokens(small.id)[3:20])
        big = dq.add_text("".join(chr(97 + i % 26) for i in range(40_000)), "big.txt").added[0]
        it = next(i for i in dq.items() if i.id == big.id)
        np.testing.assert_array_equal(src.segment(it.id, 3, 20), dq.tokens(it.id)[3:20])
        path, n = dq.token_file(it.id)
        with open(path, "r+b") as f:  # truncated under an open reader: reported, no SIGBUS
            f.truncate(8)
        with pytest.raises(CLLMError, match="damaged"):
            src.segment(it.id, 0, n)
        src.close()
    finally:
        dq.close()


def _losses(reg) -> np.ndarray:
    return np.asarray(reg.history("m")["train_loss"])


def test_random_windows_resume_exactly(tmp_path):
    """Stopped twice (once mid-epoch) and resumed == uninterrupted, bit for bit."""
    a = make_model(tmp_path / "a", target_epochs=3)
    b = make_model(tmp_path / "b", target_epochs=3)
    snap_a = run(Trainer(a, "m", eval_interval=3))
    for stop_at in (4, 11):
        t = Trainer(b, "m", eval_interval=3)
        t.start()
        wait_for(lambda t=t, s=stop_at: t.snapshot().step >= s)
        t.stop()
        assert t.join(30)
    snap_b = run(Trainer(b, "m", eval_interval=3))
    assert snap_b.step == snap_a.step and snap_b.epochs_trained == 3
    np.testing.assert_array_equal(_losses(b), _losses(a))
    np.testing.assert_array_equal(b.history("m")["val_loss"], a.history("m")["val_loss"])
    np.testing.assert_array_equal(b.load("m").gpt.params, a.load("m").gpt.params)


def test_same_seed_same_run_other_seed_other_windows(tmp_path):
    a = make_model(tmp_path / "a", target_epochs=2)
    b = make_model(tmp_path / "b", target_epochs=2)
    c = make_model(tmp_path / "c", target_epochs=2, seed=99)
    for reg in (a, b, c):
        run(Trainer(reg, "m"))
    np.testing.assert_array_equal(_losses(a), _losses(b))
    assert not np.array_equal(_losses(a), _losses(c))


def test_validation_only_items_are_held_out_whole(tmp_path):
    reg = make_model(tmp_path, target_epochs=1, val_fraction=0.0)
    dq = reg.queue("m")
    (held,) = dq.add_text("held out text, only measured. " * 8, source="val").added
    dq.set_validation([held.id])
    assert dq.item(held.id).validation
    dq.close()
    t = Trainer(reg, "m")
    assert t.val_set, "the validation-only item gives validation batches"
    segs = t._epoch_items(None)
    assert held.id not in [s[0] for s in segs]
    assert sum(s[2] - s[1] for s in segs) == sum(len(x.encode()) for x in TEXTS)
    t.close()
