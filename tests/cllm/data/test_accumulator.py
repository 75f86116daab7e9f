import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.data.accumulator import BatchAccumulator
from cllm.errors import ValidationError


def test_worked_example_from_the_original():
    acc = BatchAccumulator(4, 64)
    assert acc.required == 256
    seen = []
    for n in (50, 30, 80, 100):
        acc.add(np.arange(n, dtype=np.int32))
        seen.append((acc.buffered, acc.ready))
    assert seen == [(50, False), (80, False), (160, False), (260, True)]
    x, y = acc.take()
    assert x.shape == y.shape == (4, 64) and x.dtype == y.dtype == np.int32
    assert acc.buffered == 4
    assert not acc.ready


def test_take_before_ready_is_refused():
    acc = BatchAccumulator(2, 3)
    acc.add(np.arange(6))  # exactly B*T: the last target is missing
    with pytest.raises(ValidationError):
        acc.take()
    acc.add([6])
    x, y = acc.take()
    assert x.ravel().tolist() == [0, 1, 2, 3, 4, 5]
    assert y.ravel().tolist() == [1, 2, 3, 4, 5, 6]
    assert acc.buffered == 1


def test_bad_shape_refused():
    with pytest.raises(ValidationError):
        BatchAccumulator(0, 8)


def test_add_copies_the_callers_array():
    acc = BatchAccumulator(1, 2)
    a = np.array([1, 2, 3], dtype=np.int32)
    acc.add(a)
    a[:] = 0
    x, _ = acc.take()
    assert x.tolist() == [[1, 2]]


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 4),
    t=st.integers(1, 9),
    sizes=st.lists(st.integers(0, 40), max_size=30),
)
def test_taken_batches_plus_remainder_are_the_stream(b, t, sizes):
    acc = BatchAccumulator(b, t)
    stream = np.arange(sum(sizes), dtype=np.int32)
    xs, pos = [], 0
    for n in sizes:
        acc.add(stream[pos : pos + n])
        pos += n
        while acc.ready:
            x, y = acc.take()
            assert np.array_equal(x.ravel()[1:], y.ravel()[:-1])  # y is x shifted by one
            xs.append(x.ravel())
            assert y.ravel()[-1] == stream[sum(len(v) for v in xs)]  # next token after the batch
    taken = np.concatenate(xs) if xs else np.empty(0, np.int32)
    assert acc.buffered == stream.size - taken.size
    assert acc.buffered <= b * t  # everything takeable was taken
    assert np.array_equal(taken, stream[: taken.size])


def test_threaded_producer_consumer():
    acc = BatchAccumulator(4, 16)
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 50, size=400)
    stream = np.arange(int(sizes.sum()), dtype=np.int32)
    got: list[np.ndarray] = []
    done = threading.Event()

    def produce():
        pos = 0
        for n in sizes:
            acc.add(stream[pos : pos + n])
            pos += n
        done.set()

    def consume():
        while True:
            if acc.wait_ready(timeout=0.05):
                x, y = acc.take()
                assert np.array_equal(x.ravel()[1:], y.ravel()[:-1])
                got.append(x.ravel())
            elif done.is_set() and not acc.ready:
                return

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    taken = np.concatenate(got)
    assert taken.size == (stream.size - 1) // 64 * 64
    assert np.array_equal(taken, stream[: taken.size])
    assert acc.buffered == stream.size - taken.size
