"""What every command shares: its progress line, its durations and its JSON result line.

- :class:`ProgressLine`: long work reports on stderr, rewritten in place on a terminal and as
  occasional plain lines in a log or a pipe, so stdout stays for results.
- :func:`duration`: seconds as ``m:ss`` or ``h:mm:ss``.
- :func:`snapshot_json`: a run's snapshot (a dataclass) as the one JSON line of ``--json``.
- :func:`first_token_hint`: a line on stderr when a reply's first piece is slow to come.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

_UNSET = object()


def duration(seconds: float | None) -> str:
    """``4:05`` or ``1:02:03``; ``--:--`` when unknown (None, infinite, NaN)."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    s = max(int(seconds), 0)
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def bar(fraction: float, width: int = 24) -> str:
    """``[######..........]``: a fraction from 0 to 1 as a bar of `width` cells."""
    fill = round(width * min(max(fraction, 0.0), 1.0))
    return f"[{'#' * fill}{'.' * (width - fill)}]"


class ProgressLine:
    """The progress line of a command, on stderr (or `stream`).

    On a terminal each :meth:`show` rewrites the line in place (at most once every `interval`
    seconds, unless forced). Elsewhere (a log, a pipe) a new line is written when the `key` given
    with the text changes (a page count) or when `log_every` seconds have passed since the last
    one; with neither, nothing is written there. :meth:`done` ends the line: its last text stays
    on the terminal, or is wiped with ``clear=True``.
    """

    def __init__(
        self,
        *,
        interval: float = 0.0,
        log_every: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.interval, self.log_every = interval, log_every
        self.width = shutil.get_terminal_size().columns - 1 if self.live else 0
        self.shown = 0  # characters on the terminal line now
        self._drawn = -math.inf
        self._logged = time.monotonic()
        self._key: Any = _UNSET

    def show(self, text: str, key: Any = None, force: bool = False) -> None:
        now = time.monotonic()
        if self.live:
            if not force and now - self._drawn < self.interval:
                return
            self._drawn = now
            text = text[: self.width]
            self.stream.write("\r" + text + " " * max(0, self.shown - len(text)))
            self.shown = max(len(text), 1)
        else:
            moved = key is not None and key != self._key
            due = self.log_every is not None and now - self._logged >= self.log_every
            if not (moved or due):
                return
            self._logged = now
            self.stream.write(text + "\n")
        if key is not None:
            self._key = key
        self.stream.flush()

    def done(self, clear: bool = False) -> None:
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r" if clear else "\n")
            self.stream.flush()
            self.shown = 0


def _plain(value: Any) -> Any:
    """NaN and infinities become None (strict JSON, as any reader parses it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def snapshot_json(model: str, snap: Any, names: Iterable[str], **extra: Any) -> str:
    """The ``--json`` line of a command that ran something: the model, the named fields of the
    snapshot, then `extra` (values the command measured itself, or fields renamed)."""
    out = {"model": model, **{n: getattr(snap, n) for n in names}, **extra}
    return json.dumps(_plain(out), allow_nan=False)


FIRST_TOKEN_HINT = (
    "(waiting for the first token: the first run on this machine compiles the decoding kernels, "
    "about half a minute; later runs start at once)"
)


def first_token_hint(
    pieces: Iterable[str], after: float = 3.0, stream: TextIO | None = None
) -> Iterator[str]:
    """``pieces`` as they come; if the first one takes longer than ``after`` seconds, a line on
    stderr says why a fresh install is slow to start (numba compiles the kernels once, then
    loads them from its cache), so that nobody takes the wait for a hang."""
    out = stream if stream is not None else sys.stderr
    timer = threading.Timer(after, lambda: print(FIRST_TOKEN_HINT, file=out, flush=True))
    timer.daemon = True
    timer.start()
    try:
        for piece in pieces:
            timer.cancel()
            yield piece
    finally:
        timer.cancel()
