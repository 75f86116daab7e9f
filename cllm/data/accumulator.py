"""A first-in, first-out token buffer between the queue and the trainer.

Small items add up until a batch is ready. A batch takes exactly ``batch_size * seq_len`` tokens
as inputs; the targets are the same stream shifted by one, so one more token must be buffered, and
that token stays behind as the first input of the next batch.

Tokens are kept as a list of chunks with a read offset into the first one: ``add`` and ``take``
copy each token once, never re-concatenating the whole buffer.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from cllm.errors import ValidationError


class BatchAccumulator:
    def __init__(self, batch_size: int, seq_len: int) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ValidationError(
                f"batch size and sequence length must be at least 1, got {batch_size} x {seq_len}"
            )
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        self._chunks: deque[np.ndarray] = deque()
        self._head = 0  # tokens of _chunks[0] already consumed
        self._buffered = 0
        self._cond = threading.Condition()

    @property
    def required(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def buffered(self) -> int:
        with self._cond:
            return self._buffered

    @property
    def ready(self) -> bool:
        with self._cond:
            return self._buffered >= self.required + 1

    def add(self, tokens) -> None:
        chunk = np.array(tokens, dtype=np.int32).ravel()  # a private copy: callers may reuse theirs
        if chunk.size == 0:
            return
        with self._cond:
            self._chunks.append(chunk)
            self._buffered += chunk.size
            self._cond.notify_all()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until a batch can be taken (True) or the timeout passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._buffered >= self.required + 1, timeout)

    def clear(self) -> None:
        with self._cond:
            self._chunks.clear()
            self._head = 0
            self._buffered = 0

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """Inputs x and next-token targets y, int32 [B, T]; consumes exactly B*T tokens."""
        n = self.required
        with self._cond:
            if self._buffered < n + 1:
                raise ValidationError(
                    f"batch not ready: {self._buffered} tokens buffered, {n + 1} needed"
                )
            buf = np.empty(n + 1, dtype=np.int32)
            filled, head = 0, self._head
            for chunk in self._chunks:  # gather n + 1 tokens without consuming yet
                k = min(chunk.size - head, n + 1 - filled)
                buf[filled : filled + k] = chunk[head : head + k]
                filled += k
                head = 0
                if filled == n + 1:
                    break
            left = n  # now consume n: whole chunks first, then part of the next
            while left:
                avail = self._chunks[0].size - self._head
                if avail <= left:
                    self._chunks.popleft()
                    self._head = 0
                    left -= avail
                else:
                    self._head += left
                    left = 0
            self._buffered -= n
        x = buf[:n].reshape(self.batch_size, self.seq_len)
        y = buf[1:].reshape(self.batch_size, self.seq_len)
        return x, y
