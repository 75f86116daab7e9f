"""Headless studio fixtures: a real window on SDL's dummy driver, driven by posted events."""

from __future__ import annotations

import os
import shutil
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import pygame  # noqa: E402
import pytest  # noqa: E402

from cllm.engine.config import GPTConfig  # noqa: E402
from cllm.models.registry import Registry  # noqa: E402

TINY = GPTConfig(vocab_size=257, n_embd=32, n_layer=1, n_head=2, block_size=64)
TEXT = ("The quick brown fox jumps over the lazy dog. " * 40 + "\n") * 6


@pytest.fixture(scope="session", autouse=True)
def compiled_decoding():
    """A fresh checkout's first reply compiles the decoding kernels (15-25 s on 2 cores); done
    once here, so that the tests' frame-by-frame waits time the studio, not the compiler."""
    from cllm.engine.warm import warm_decoding

    warm_decoding()


@pytest.fixture(scope="session")
def template(tmp_path_factory):
    """Two tiny byte-level models, 'alpha' with a queue, 'beta' without; made once."""
    d = tmp_path_factory.mktemp("models-template")
    reg = Registry(d)
    for name in ("alpha", "beta"):
        reg.create(
            name,
            config=TINY,
            tokenizer="byte",
            text="x",
            target_epochs=5,
            train={"batch_size": 4, "seq_len": 32, "warmup": 2},
        )
    with reg.queue("alpha") as q:
        q.add_text(TEXT, source="fox.txt")
    return d


@pytest.fixture
def models_dir(template, tmp_path):
    d = tmp_path / "models"
    shutil.copytree(template, d)
    return d


@pytest.fixture
def studio(models_dir):
    from app.studio import Studio

    s = Studio((1600, 900), models_dir, demo=False)
    frames_until(s, lambda: s.st.listed and s.st.current and s.st.loaded and not s.worker.busy)
    yield s
    s.close()


def frames_until(studio, cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        studio.step()
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError(f"condition not reached within {timeout:.0f} s")


def settle(studio) -> None:
    """Let background jobs finish and their results land."""
    frames_until(studio, lambda: not studio.worker.busy and not studio.st.busy)
    studio.pump(2)


def _motion(pos, buttons=(0, 0, 0)) -> None:
    pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=pos, rel=(0, 0), buttons=buttons))


def move(studio, pos) -> None:
    _motion(pos)
    studio.step()


def click(studio, pos, frames: int = 1) -> None:
    move(studio, pos)
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=pos, button=1))
    studio.step()
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=pos, button=1))
    studio.pump(frames)


def drag(studio, start, end, steps: int = 4) -> None:
    move(studio, start)
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=start, button=1))
    studio.step()
    for i in range(1, steps + 1):
        x = start[0] + (end[0] - start[0]) * i // steps
        y = start[1] + (end[1] - start[1]) * i // steps
        _motion((x, y), (1, 0, 0))
        studio.step()
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=end, button=1))
    studio.step()


def key(studio, k: int, mod: int = 0, unicode: str = "") -> None:
    pygame.event.post(
        pygame.event.Event(pygame.KEYDOWN, key=k, mod=mod, unicode=unicode, scancode=0)
    )
    pygame.event.post(pygame.event.Event(pygame.KEYUP, key=k, mod=mod, unicode=unicode, scancode=0))
    studio.step()


def type_text(studio, text: str) -> None:
    """Typed characters arrive as TEXTINPUT (and their KEYDOWNs, as SDL sends both)."""
    for ch in text:
        pygame.event.post(
            pygame.event.Event(
                pygame.KEYDOWN,
                key=ord(ch.lower()) if ch.isascii() else 0,
                mod=0,
                unicode=ch,
                scancode=0,
            )
        )
        pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text=ch))
    studio.step()


def rect_of(studio, wid: str) -> pygame.Rect:
    """Where widget `wid` was drawn in the last frame."""
    drawn = studio.ui.drawn
    if wid not in drawn:
        raise AssertionError(f"{wid!r} not drawn; drawn: {sorted(drawn)}")
    return drawn[wid]


def press(studio, wid: str, frames: int = 1) -> None:
    click(studio, rect_of(studio, wid).center, frames)
