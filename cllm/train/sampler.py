"""Where the trainer's batches come from: random windows (the default) or the sequential stream.

Both read a *virtual stream*: the epoch's segments ``(item id, lo, hi, weight)`` laid end to end,
each ``tokens[lo:hi]`` of a queue item followed by one end-of-text token. Token files are
read window by window (``TokenSource``, ``pread`` on open files), so a window reads only its own
bytes and the queue is never loaded into memory; the most recently used files stay open.

Random windows (``WindowSampler``): each batch row is the ``T + 1`` tokens starting at a position
drawn from the trainer's RNG (the model's saved ``numpy`` generator, so a resumed run draws what
an uninterrupted one would). Every start position from which a whole window fits is possible; a
position in a segment of weight ``w`` is ``w`` times as likely as one of weight 1, so with equal
weights a file is sampled in proportion to its tokens. ``item_weight`` turns a queue item's
priority into its weight: ``1 + priority`` for a positive priority, else 1. An epoch is
``ceil(train tokens / (B * T))`` batches: one pass worth of tokens.

The sequential stream (``SequentialStream``): the segments in queue order, cut into consecutive
``B x T`` batches from an offset below ``T`` drawn at the epoch's start (the stream before random
windows became the default; ``sampling = "sequential"``).

Validation (``validation_batches``): a fixed set of windows spread evenly over every item's held
out tail and the validation-only items, the same for every measurement of the run.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict

import numpy as np

from cllm.errors import CLLMError

FILES_OPEN = 64  # token files kept open


def item_weight(priority: int) -> float:
    """A queue item's sampling weight per token: 1, raised by a positive priority."""
    return 1.0 + max(0, int(priority))


class TokenSource:
    """The token files of one queue, read piece by piece with ``pread``; the most recently used
    ``FILES_OPEN`` files stay open. (Not memory-mapped: a token file truncated under a map turns
    the next read into SIGBUS, which kills the process; ``pread`` returns short and is reported.)
    """

    def __init__(self, dq) -> None:
        self.dq = dq
        self._files: OrderedDict[int, tuple[int, int, str]] = OrderedDict()  # id: fd, n, path
        self._inline: set[int] = set()  # items stored in the index, read through the queue

    def _open(self, item_id: int) -> tuple[int, int, str]:
        f = self._files.get(item_id)
        if f is not None:
            self._files.move_to_end(item_id)
            return f
        path, n = self.dq.token_file(item_id)
        if path is None:
            self._inline.add(item_id)
            return -1, n, ""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            raise CLLMError(
                f"queue item {item_id} ({path}) is unreadable: {err.strerror}"
            ) from None
        self._files[item_id] = f = (fd, n, str(path))
        if len(self._files) > FILES_OPEN:
            os.close(self._files.popitem(last=False)[1][0])
        return f

    def segment(self, item_id: int, lo: int, hi: int) -> np.ndarray:
        """Tokens ``lo:hi`` of the item, int32."""
        fd, n, path = self._open(item_id)
        if fd < 0:  # a small item lives in the queue's index
            if hi > n:
                raise CLLMError(f"queue item {item_id} changed on disk: {n} tokens, not {hi}")
            return self.dq.read(item_id, lo, hi)
        if hi > n:
            raise CLLMError(f"queue item {item_id} changed on disk: {n} tokens, not {hi}")
        want = 4 * (hi - lo)
        try:
            raw = os.pread(fd, want, 4 * lo)
        except OSError as err:
            raise CLLMError(
                f"queue item {item_id} ({path}) is unreadable: {err.strerror}"
            ) from None
        if len(raw) != want:
            raise CLLMError(
                f"queue item {item_id} ({path}) is damaged: it ended after "
                f"{lo + len(raw) // 4} of {n} tokens"
            )
        return np.frombuffer(raw, "<i4").astype(np.int32, copy=False)

    def close(self) -> None:
        while self._files:
            os.close(self._files.popitem()[1][0])


class VirtualStream:
    """Segments ``(item id, lo, hi[, weight])`` end to end, each followed by end-of-text."""

    def __init__(self, source: TokenSource, segments, eot: int) -> None:
        self.source, self.eot = source, int(eot)
        self.segments = [tuple(s) for s in segments]
        lens = np.array([s[2] - s[1] + 1 for s in self.segments], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self.length = int(self.starts[-1])

    @property
    def tokens(self) -> int:
        """Tokens of text (end-of-text separators not counted)."""
        return sum(s[2] - s[1] for s in self.segments)

    def read(self, a: int, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """``n`` tokens from offset ``a`` (which must fit in the stream)."""
        if out is None:
            out = np.empty(n, np.int32)
        filled, i = 0, int(np.searchsorted(self.starts, a, side="right")) - 1
        while filled < n:
            item_id, lo, hi = self.segments[i][:3]
            pos = a + filled - int(self.starts[i])  # offset in this segment (hi - lo is the EOT)
            if pos < hi - lo:
                k = min(hi - lo - pos, n - filled)
                out[filled : filled + k] = self.source.segment(item_id, lo + pos, lo + pos + k)
                filled += k
            if filled < n and a + filled == int(self.starts[i + 1]) - 1:
                out[filled] = self.eot
                filled += 1
            i += 1
        return out


class WindowSampler:
    """Batches of random ``T + 1``-token windows, token-weighted (see the module docstring)."""

    def __init__(self, source: TokenSource, segments, eot: int, B: int, T: int) -> None:
        self.stream = VirtualStream(source, segments, eot)
        self.B, self.T = int(B), int(T)
        last = self.stream.length - self.T - 1  # the last start from which a window fits
        starts = self.stream.starts
        self.n_starts = np.clip(np.minimum(starts[1:], last + 1) - starts[:-1], 0, None)
        w = np.array([float(s[3]) if len(s) > 3 else 1.0 for s in self.stream.segments])
        self.weights = w if w.size else np.ones(0)
        mass = self.weights * self.n_starts
        self.cum = np.cumsum(mass)
        self.total = float(self.cum[-1]) if self.cum.size else 0.0

    @staticmethod
    def batches_per_epoch(segments, B: int, T: int) -> int:
        tokens = sum(s[2] - s[1] for s in segments)
        length = tokens + len(segments)
        if length < T + 1:
            return 0
        return math.ceil(tokens / (B * T))

    def starts(self, rng: np.random.Generator) -> np.ndarray:
        """B window starts in the stream, from one draw of ``rng``."""
        r = rng.random(self.B) * self.total
        seg = np.minimum(np.searchsorted(self.cum, r, side="right"), len(self.cum) - 1)
        below = np.where(seg > 0, self.cum[seg - 1], 0.0)
        within = np.floor((r - below) / self.weights[seg]).astype(np.int64)
        within = np.clip(within, 0, self.n_starts[seg] - 1)
        return self.stream.starts[seg] + within

    def batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and next-token targets, int32 ``[B, T]``."""
        if self.total <= 0:
            raise CLLMError("the epoch's training tokens are too few for one window")
        buf = np.empty((self.B, self.T + 1), np.int32)
        for row, a in enumerate(self.starts(rng)):
            self.stream.read(int(a), self.T + 1, buf[row])
        return buf[:, :-1], buf[:, 1:]


class SequentialStream:
    """The segments in order, as consecutive ``B x T`` batches from a start offset."""

    def __init__(self, source: TokenSource, segments, eot: int, B: int, T: int) -> None:
        self.stream = VirtualStream(source, segments, eot)
        self.B, self.T = int(B), int(T)

    @staticmethod
    def batches_per_epoch(segments, B: int, T: int) -> int:
        length = sum(s[2] - s[1] + 1 for s in segments)
        return max(0, (length - T) // (B * T))

    def batch_at(self, offset: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The batch whose inputs start at ``offset``; None when the stream is too short."""
        n = self.B * self.T + 1
        if offset + n > self.stream.length:
            return None
        buf = self.stream.read(int(offset), n)
        return (
            buf[:-1].reshape(self.B, self.T),
            buf[1:].reshape(self.B, self.T),
        )


def drop_segments(segments, keep: set[int], offset: int | None = None) -> tuple[list, int | None]:
    """The segments whose item is in ``keep``, and a stream offset moved back by what was dropped
    before it: the same token when it was in a kept segment, else the start of what followed."""
    segments = [tuple(s) for s in segments]
    kept = [s for s in segments if s[0] in keep]
    if offset is None or len(kept) == len(segments):
        return kept, offset
    cut, a = 0, 0
    for s in segments:
        n = s[2] - s[1] + 1  # its tokens and the end-of-text after them
        if s[0] not in keep and a < offset:
            cut += min(a + n, offset) - a
        a += n
    return kept, int(offset) - cut


def validation_batches(
    source: TokenSource, segments, eot: int, B: int, T: int, n_batches: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``n_batches`` fixed batches of windows spread evenly over the held-out segments."""
    stream = VirtualStream(source, segments, eot)
    rows = min(n_batches * B, (stream.length - 1) // T) if stream.length > T else 0
    if rows < 1:
        return []
    if rows > B:
        rows -= rows % B  # whole batches only, so every val batch has the training shape
    starts = np.linspace(0, stream.length - T - 1, rows).astype(np.int64)
    data = np.stack([stream.read(int(a), T + 1) for a in starts])
    return [(data[i : i + B, :-1].copy(), data[i : i + B, 1:].copy()) for i in range(0, rows, B)]
