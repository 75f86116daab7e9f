"""Kiosk mode through the real loop: the tour, a typed chat, pausing on input, Ctrl+Q only, errors
inside a tab, and the demo model trained live. Time is a fake clock the tests move."""

from __future__ import annotations

import shutil
import time
import types

import pygame
import pytest

from app.kiosk import CONVERSATION, SAMPLE_PROMPTS, Kiosk
from app.tabs import llm as tab_llm

from .conftest import frames_until

CTRL = pygame.KMOD_LCTRL


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def kiosk(studio, clock):
    tab_llm.state(studio.st)["params"]["max_tokens"] = 16
    return Kiosk(studio, demo="alpha", tour_s=10, idle_s=30, type_s=0.1, train=False, clock=clock)


def run(k: Kiosk, clock: Clock, seconds: float, dt: float = 0.5) -> None:
    """Frames while the fake clock moves `seconds` ahead in steps of dt."""
    for _ in range(int(seconds / dt)):
        clock.t += dt
        assert k.step()


def post_key(k: int, mod: int = 0, unicode: str = "") -> None:
    pygame.event.post(
        pygame.event.Event(pygame.KEYDOWN, key=k, mod=mod, unicode=unicode, scancode=0)
    )


def test_tour_types_a_prompt_chats_and_switches_tabs(kiosk, clock):
    st = kiosk.st
    assert kiosk.studio.tab_name == "llm"
    frames_until(kiosk.studio, lambda: tab_llm.ready(st))
    run(kiosk, clock, 0.5, dt=0.25)
    typed = tab_llm.state(st)["input"]
    assert typed and SAMPLE_PROMPTS[0].startswith(typed) and typed != SAMPLE_PROMPTS[0]
    run(kiosk, clock, 4)  # typed in full, then sent
    conv = tab_llm.conversation(st)
    assert conv["title"] == CONVERSATION
    assert conv["messages"][0]["role"] == "user"
    assert conv["messages"][0]["text"] == SAMPLE_PROMPTS[0]
    # the tour waits on the LLM tab while the reply streams, then moves on every tour_s
    frames_until(kiosk, lambda: not tab_llm.writing(st))
    assert kiosk.studio.tab_name == "llm"
    for _ in range(200):
        if kiosk.studio.tab_name != "llm":
            break
        run(kiosk, clock, 1)
    assert kiosk.studio.tab_name == "training"
    assert conv["messages"][1]["state"] == "done"
    seen = []
    for _ in range(4):
        run(kiosk, clock, 10)
        seen.append(kiosk.studio.tab_name)
    assert seen == ["research", "crawler", "models", "llm"]


def test_input_pauses_the_tour_until_idle(kiosk, clock):
    kiosk.studio.switch(1)  # the tour follows the tab shown
    run(kiosk, clock, 1)
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(600, 400), button=1))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=(600, 400), button=1))
    run(kiosk, clock, 1)
    assert kiosk.paused
    run(kiosk, clock, 25)
    assert kiosk.studio.tab_name == "training"  # no touring while paused
    post_key(pygame.K_a, unicode="a")  # more input extends the pause
    run(kiosk, clock, 20)
    assert kiosk.paused and kiosk.studio.tab_name == "training"
    run(kiosk, clock, 12)  # 30 s idle: the tour goes on
    assert not kiosk.paused
    run(kiosk, clock, 10)
    assert kiosk.studio.tab_name == "research"


def test_only_ctrl_q_quits(kiosk, clock):
    studio = kiosk.studio
    fullscreen = studio.fullscreen
    post_key(pygame.K_ESCAPE)
    post_key(pygame.K_q, unicode="q")
    pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text="q"))
    post_key(pygame.K_F11)
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    run(kiosk, clock, 1)
    assert studio.running and studio.fullscreen == fullscreen
    post_key(pygame.K_q, CTRL)
    clock.t += 0.5
    assert not kiosk.step()
    assert not studio.running


def test_an_exception_in_a_tab_shows_a_banner_and_the_kiosk_goes_on(kiosk, clock):
    def boom(*args):
        raise RuntimeError("boom")

    studio = kiosk.studio
    studio.modules["research"] = types.SimpleNamespace(draw=boom)
    studio.switch(2)
    run(kiosk, clock, 2)
    assert studio.tab_name == "research" and studio.running
    assert studio.banner is not None and "boom" in studio.banner[0]
    run(kiosk, clock, 10)
    assert studio.tab_name == "crawler"  # the tour went on past the broken tab


def test_the_kiosk_trains_the_demo_model_live(studio, clock):
    with studio.st.registry.queue("beta") as q:
        q.add_text("some text to learn from. " * 200, source="t.txt")
    k = Kiosk(studio, demo="beta", tour_s=10, clock=clock)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        clock.t += 0.5
        assert k.step()
        snap = studio.st.snapshot
        if studio.st.trainer_name == "beta" and snap is not None and snap.step >= 2:
            break
        time.sleep(0.01)
    assert studio.st.current == "beta" and studio.st.trainer_name == "beta"
    assert studio.st.snapshot.step >= 2


def test_a_jitter_of_the_mouse_is_not_a_person_a_real_move_is(kiosk, clock):
    pygame.event.post(
        pygame.event.Event(pygame.MOUSEMOTION, pos=(5, 5), rel=(1, 0), buttons=(0, 0, 0))
    )
    run(kiosk, clock, 0.5)
    assert not kiosk.paused
    pygame.event.post(
        pygame.event.Event(pygame.MOUSEMOTION, pos=(90, 50), rel=(40, 25), buttons=(0, 0, 0))
    )
    run(kiosk, clock, 0.5)
    assert kiosk.paused


def test_the_kiosk_works_on_its_own_copy_and_leaves_the_users_models_untouched(models_dir, clock):
    """Issue: the kiosk trained demo in the user's real folder (step 393 to 1,073) and left a
    "Kiosk" conversation behind."""
    from app import kiosk as kiosk_mod
    from cllm.models.registry import Registry

    Registry(models_dir).copy("alpha", "demo")
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in models_dir.rglob("*")}
    studio, tmp = kiosk_mod.open_studio(models_dir)
    try:
        assert studio.st.models_dir == tmp / "models"
        k = Kiosk(studio, tour_s=10, type_s=0.01, clock=clock)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            clock.t += 0.5
            assert k.step()
            snap = studio.st.snapshot
            if studio.st.trainer_name == "demo" and snap is not None and snap.step >= 2:
                break
            time.sleep(0.01)
        assert studio.st.snapshot.step >= 2  # it trains: the copy has the demo corpus queued
        studio.st.stop_training()
        frames_until(studio, lambda: studio.st.trainer is None, timeout=30)
    finally:
        studio.close()
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in models_dir.rglob("*")}
    assert after == before  # not a byte, not a timestamp changed; no conversations file
    assert (tmp / "models" / "demo.cllm").exists()  # the copy did the work
    shutil.rmtree(tmp)
