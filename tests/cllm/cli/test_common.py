"""The helpers every command shares: the progress line, durations and the JSON result line."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cllm.cli import common
from cllm.cli.common import ProgressLine, bar, duration, snapshot_json


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "seconds, shown",
    [
        (0, "0:00"),
        (5.9, "0:05"),
        (65, "1:05"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (3723, "1:02:03"),
        (100 * 3600 + 1, "100:00:01"),
        (None, "--:--"),
        (math.inf, "--:--"),
        (math.nan, "--:--"),
        (-3, "0:00"),
    ],
)
def test_duration(seconds, shown):
    assert duration(seconds) == shown


@given(st.integers(0, 10**7))
def test_duration_reads_back(s):
    parts = [int(p) for p in duration(s).split(":")]
    assert sum(p * 60**i for i, p in enumerate(reversed(parts))) == s
    assert all(p < 60 for p in parts[1:])


def test_bar():
    assert bar(0, 4) == "[....]" and bar(0.5, 4) == "[##..]" and bar(1, 4) == "[####]"
    assert bar(2, 4) == "[####]" and bar(-1, 4) == "[....]"


def test_progress_line_on_a_terminal_is_rewritten_in_place(monkeypatch):
    term = Terminal()
    line = ProgressLine(stream=term)
    line.show("a long first line")
    line.show("short")
    line.done()
    # the shorter text blanks what is left of the longer one; done() ends the line
    assert term.getvalue() == "\ra long first line" + "\rshort" + " " * 12 + "\n"
    term = Terminal()
    line = ProgressLine(stream=term)
    line.show("adding")
    line.done(clear=True)
    assert term.getvalue() == "\radding\r      \r"


def test_progress_line_on_a_terminal_is_rate_limited(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: now[0])
    term = Terminal()
    line = ProgressLine(stream=term, interval=0.1)
    line.show("1")
    now[0] += 0.05
    line.show("2")  # too soon
    line.show("3", force=True)  # the last one always shows
    now[0] += 0.2
    line.show("4")
    assert term.getvalue().split("\r")[1:] == ["1", "3", "4"]


def test_progress_line_in_a_log(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: now[0])
    log = io.StringIO()
    by_key = ProgressLine(stream=log)  # a line when the key moves (the crawl's page count)
    for pages in (0, 0, 1, 1, 1, 2):
        by_key.show(f"{pages} pages", key=pages)
    by_key.done()
    assert log.getvalue() == "0 pages\n1 pages\n2 pages\n"
    log = io.StringIO()
    timed = ProgressLine(stream=log, log_every=10.0)  # a line every 10 s (training)
    for _ in range(25):
        now[0] += 1.0
        timed.show(f"at {now[0]:.0f}")
    assert log.getvalue() == "at 110\nat 120\n"
    log = io.StringIO()
    quiet = ProgressLine(stream=log)  # neither: nothing in a log (queue add)
    quiet.show("adding", force=True)
    quiet.done(clear=True)
    assert log.getvalue() == ""


@dataclass
class Snap:
    state: str = "done"
    loss: float | None = float("nan")
    steps: int = 3
    history: tuple = (1.0, float("inf"))


def test_snapshot_json_is_strict_json():
    out = snapshot_json("m", Snap(), ("state", "loss", "history"), seconds=1.5)
    assert json.loads(out) == {
        "model": "m",
        "state": "done",
        "loss": None,
        "history": [1.0, None],
        "seconds": 1.5,
    }
    assert "NaN" not in out and "Infinity" not in out
    assert list(json.loads(out))[0] == "model"


def test_first_token_hint_speaks_only_when_the_first_piece_is_slow():
    import io
    import time

    from cllm.cli.common import FIRST_TOKEN_HINT, first_token_hint

    def slow():
        time.sleep(0.4)
        yield "a"
        yield "b"

    out = io.StringIO()
    assert list(first_token_hint(slow(), after=0.1, stream=out)) == ["a", "b"]
    assert out.getvalue().strip() == FIRST_TOKEN_HINT

    out = io.StringIO()
    assert list(first_token_hint(iter(["a", "b"]), after=0.1, stream=out)) == ["a", "b"]
    time.sleep(0.3)  # past `after`: the timer was cancelled with the first piece
    assert out.getvalue() == ""

    def broken():
        raise ValueError("no model")
        yield  # (a generator)

    out = io.StringIO()
    with pytest.raises(ValueError):
        list(first_token_hint(broken(), after=0.1, stream=out))
    time.sleep(0.3)
    assert out.getvalue() == ""
