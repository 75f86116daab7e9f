"""Kiosk mode (`python -m app --kiosk`): a full-screen attract loop for a stand or a screen in a
hall. It keeps the demo model training live, types sample prompts into the LLM tab's input (so a
passer-by sees the chat happen), and tours the tabs about every ten seconds.

Any input from a person pauses the tour until they have left it alone for a while. Only Ctrl+Q
quits: Esc, q, F11 and the window manager's close are ignored. An exception inside a tab or in the
tour shows the studio's error banner and the loop goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pygame

from .state import DEMO_NAME, DEMO_TARGET_EPOCHS
from .studio import FPS, TABS, Studio
from .tabs import llm as tab_llm

log = logging.getLogger("app")

TOUR = ["llm", "training", "research", "crawler", "models"]
CONVERSATION = "Kiosk"
SAMPLE_PROMPTS = [
    "The model file is",
    "Training runs in a background thread that",
    "A queue holds",
    "def forward(self, idx, targets=None):",
    "The twelve kissing spheres",
    "To create a new model,",
    "The crawler fetches",
]
# events that mean a person is at the screen (motion counts only when the mouse really moved)
INPUT_EVENTS = {
    pygame.KEYDOWN,
    pygame.TEXTINPUT,
    pygame.MOUSEBUTTONDOWN,
    pygame.MOUSEWHEEL,
    pygame.FINGERDOWN,
}


class Kiosk:
    """Drives a Studio frame by frame; step() returns False once Ctrl+Q was pressed."""

    def __init__(
        self,
        studio: Studio,
        *,
        demo: str = DEMO_NAME,
        tour_s: float = 10.0,
        idle_s: float = 30.0,
        type_s: float = 0.07,
        train: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.studio, self.st = studio, studio.st
        self.demo, self.train = demo, train
        self.tour_s, self.idle_s, self.type_s = tour_s, idle_s, type_s
        self.clock = clock
        self.paused_until = 0.0
        self.stop = 0  # index in TOUR
        self.since = clock()  # when the current stop began
        self.prompt: str | None = None  # being typed
        self.typing_since = 0.0
        self.sent = False  # this visit to the LLM tab has asked its question
        self.n_prompt = 0
        self.next_check = 0.0
        self.next_start = 0.0
        self.created = False
        self._last_error = ""
        studio.switch(self._tab_index(TOUR[0]))

    @property
    def paused(self) -> bool:
        return self.clock() < self.paused_until

    def step(self) -> bool:
        self._take_events()
        try:
            self._attract()
        except Exception as err:
            self._failed(err)
        try:
            return self.studio.step()
        except Exception as err:  # the frame's own machinery: show it and draw the next frame
            self._failed(err)
            return self.studio.running

    # ------------------------------------------------------------------ input
    def _take_events(self) -> None:
        """Look at this frame's events before the studio does: note a person, drop what must
        not quit or leave full screen, and put the rest back in order."""
        keep = []
        for e in pygame.event.get():
            if e.type == pygame.QUIT:
                continue
            moved = e.type == pygame.MOUSEMOTION and abs(e.rel[0]) + abs(e.rel[1]) > 2
            person = e.type in INPUT_EVENTS or moved
            if person:
                self._person()
            if e.type in (pygame.KEYDOWN, pygame.KEYUP) and e.key == pygame.K_F11:
                continue
            keep.append(e)
        for e in keep:
            pygame.event.post(e)

    def _person(self) -> None:
        if not self.paused:
            self.studio.ui.toast(
                f"Kiosk tour paused: it goes on after {self.idle_s:.0f} s without input", "info"
            )
            if self.prompt is not None:  # leave the field to the person, not half a prompt
                tab_llm.set_input(self.st, "")
                self.prompt = None
        self.paused_until = self.clock() + self.idle_s

    # ------------------------------------------------------------------ the attract loop
    def _attract(self) -> None:
        now = self.clock()
        if self.train and now >= self.next_check:
            self.next_check = now + 2.0
            self._keep_training(now)
        if self.paused:
            self.since = now  # after a pause the tab shown gets its full time
            return
        name = TOUR[self.stop]
        if self.studio.tab_name != name:  # a person switched tabs: the tour picks up from there
            self.stop = TOUR.index(self.studio.tab_name) if self.studio.tab_name in TOUR else 0
            self.since, self.sent, self.prompt = now, False, None
            name = TOUR[self.stop]
        stay = now - self.since
        if name == "llm":
            self._chat(now)
            chatted = self.sent and self.prompt is None and not tab_llm.writing(self.st)
            leave = stay >= self.tour_s and (chatted or stay >= 2.5 * self.tour_s)
        else:
            leave = stay >= self.tour_s
        if leave:
            if self.prompt is not None:
                tab_llm.set_input(self.st, "")
                self.prompt = None
            self.stop = (self.stop + 1) % len(TOUR)
            self.since, self.sent = now, False
            self.studio.switch(self._tab_index(TOUR[self.stop]))

    def _chat(self, now: float) -> None:
        """Type the next sample prompt into the input, a character at a time, then send it."""
        st = self.st
        if self.sent or not tab_llm.ready(st) or st.current != self.demo:
            return
        if self.prompt is None:
            if tab_llm.writing(st):
                return  # the last reply is still streaming in
            tab_llm.use_conversation(st, CONVERSATION)
            if len(tab_llm.conversation(st)["messages"]) > 8:  # keep it one screen long
                tab_llm.clear_chat(st)
            tab_llm.state(st)["compare"] = False
            self.studio.ui.focus = None  # the field shows what the kiosk types
            self.prompt = SAMPLE_PROMPTS[self.n_prompt % len(SAMPLE_PROMPTS)]
            self.n_prompt += 1
            self.typing_since = now
        n = min(len(self.prompt), int((now - self.typing_since) / self.type_s))
        tab_llm.set_input(st, self.prompt[:n])
        done_typing = now - self.typing_since >= (len(self.prompt) + 8) * self.type_s
        if done_typing and tab_llm.send(st):
            self.prompt, self.sent = None, True

    def _keep_training(self, now: float) -> None:
        """The demo model trains whenever nothing else does: created on first use, selected,
        and given more epochs when it reaches its target."""
        st = self.st
        if not st.listed or st.is_busy(self.demo) or st.trainer is not None:
            return
        info = st.info(self.demo)
        if info is None:
            if self.demo == DEMO_NAME and not self.created:
                self.created = True
                st.create_demo()  # creates it and starts its training
            return
        if st.current != self.demo and not self.paused:
            st.select(self.demo)
        if now < self.next_start:
            return
        self.next_start = now + 30.0  # a run that fails at once is not restarted every frame
        trained = info.meta.epochs_trained
        if trained >= info.meta.target_epochs:
            target = trained + DEMO_TARGET_EPOCHS
            st.run(
                "settings",
                self.demo,
                st.registry.set_settings,
                self.demo,
                target_epochs=target,
                done=lambda _: st.start_training(self.demo),
            )
        else:
            st.start_training(self.demo)

    # ------------------------------------------------------------------ helpers
    def _tab_index(self, name: str) -> int:
        return [n for _, n in TABS].index(name)

    def _failed(self, err: BaseException) -> None:
        msg = f"Kiosk: {type(err).__name__}: {err}"
        if msg != self._last_error:
            log.exception("kiosk step failed")
            self.studio.ui.toast(msg, "error")
            self._last_error = msg
        self.studio.banner = (msg, time.time() + 8)


def run(studio: Studio) -> None:
    """The kiosk's main loop, full screen, until Ctrl+Q."""
    if not studio.fullscreen:
        studio.toggle_fullscreen()
    kiosk = Kiosk(studio)
    while kiosk.step():
        studio.clock.tick(FPS)
