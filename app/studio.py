"""The studio window: tab bar, right control panel, the main loop, and its command line.

Each tab is a module ``app/tabs/<name>.py`` with ``draw(ui, st, main_rect, panel_rect)``; the loop
draws the current one inside a guard, so an exception in a tab becomes an error banner and a toast
instead of taking the window down.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import ModuleType

import pygame

from cllm.models import paths

from . import selector
from . import theme as th
from .state import DEMO_NAME, AppState
from .ui import UI
from .worker import Worker

log = logging.getLogger("app")

TABS = [
    ("LLM", "llm"),
    ("Training", "training"),
    ("Research", "research"),
    ("Crawler", "crawler"),
    ("Models", "models"),
]
PANEL_W = 320
TAB_H = 40
TOP = 60
FPS = 60
IDLE_REDRAW_S = 0.25  # a screen with nothing new is still repainted this often (clocks, caret)
# A new training snapshot alone (a step finished; nobody touches the window) repaints at most this
# often: the charts move once a step, and every frame drawn is taken from the training's cores.
SNAPSHOT_REDRAW_S = 1 / 8
# Such a repaint redraws only the tab's main area where the tab can (its draw_view), leaving the
# panel and the tab bar as the last full frame drew them; a full frame comes at least this often
# (the resource line beside the tabs changes once a second) and on anything else.
FULL_REDRAW_S = 1.0


class Studio:
    def __init__(
        self,
        size: tuple[int, int] = (1600, 900),
        models_dir: Path | str | None = None,
        *,
        fullscreen: bool = False,
        demo: bool = True,
        tab: str = "training",
    ) -> None:
        pygame.display.init()  # no audio: the studio makes no sound
        pygame.font.init()
        self.windowed = size
        self.fullscreen = fullscreen
        self._set_mode()
        pygame.display.set_caption("Crystalline CLLM Studio")
        pygame.key.set_repeat(400, 30)  # held Backspace and arrows repeat
        self.ui = UI(pygame.display.get_surface())
        models_dir = paths.models_dir(models_dir)
        self.worker = Worker()
        self.st = AppState(models_dir, self.worker, demo=demo)
        self.st.notify = self.ui.toast
        self.worker.on_error = self.st.fail
        self.tab = [n for _, n in TABS].index(tab)
        self.modules: dict[str, ModuleType | BaseException] = {}
        self.banner: tuple[str, float] | None = None
        self.clock = pygame.time.Clock()
        self.running = True
        self.frame_ms: list[float] = []  # time of each frame drawn
        self.skipped = 0  # frames with nothing new: input polled, nothing repainted
        # the app (main) moves start-up's objects out of the collector's way (_settle_gc); a
        # studio made by a test leaves its process's collector alone
        self.settle_gc = False
        self._gc_frozen = False
        self._drawn_key: tuple = ()
        self._drawn_at = 0.0
        self._full_at = 0.0  # the last full frame
        self._view_only = False  # this frame repaints the main area alone (a new snapshot)
        self.view_frames = 0  # frames that repainted the main area alone
        self._settle = True
        self._res_at = 0.0
        self._res_lines: list[str] = []
        self._procs: dict[int, object] = {}
        self.st.start()
        for _, name in TABS:  # import the tabs in the background: the first switch is instant
            self.worker.submit(
                importlib.import_module, f"app.tabs.{name}", done=_ignore, error=_ignore
            )

    # ------------------------------------------------------------------ window
    def _set_mode(self) -> None:
        if self.fullscreen:
            pygame.display.set_mode((0, 0), pygame.FULLSCREEN)
        else:
            pygame.display.set_mode(self.windowed, pygame.RESIZABLE)

    def toggle_fullscreen(self) -> None:
        if not self.fullscreen:
            self.windowed = pygame.display.get_surface().get_size()
        self.fullscreen = not self.fullscreen
        self._set_mode()

    def layout(self) -> tuple[pygame.Rect, pygame.Rect, pygame.Rect]:
        """Tab bar, main area and right panel for the current window size."""
        w, h = pygame.display.get_surface().get_size()
        mw = max(200, w - PANEL_W)
        return (
            pygame.Rect(0, 0, mw, TAB_H),
            pygame.Rect(0, TOP, mw, h - TOP),
            pygame.Rect(mw, TOP, w - mw, h - TOP),
        )

    @property
    def tab_name(self) -> str:
        return TABS[self.tab][1]

    def switch(self, i: int) -> None:
        self.tab = i % len(TABS)
        selector.close(self.ui)
        self.ui.focus = None

    # ------------------------------------------------------------------ one frame
    def step(self) -> bool:
        """Handle input, draw one frame, flip. Returns False once the app should quit.
        Nothing raises out of here: a failure is logged and shown, and the next frame comes."""
        try:
            return self._step()
        except Exception as err:
            log.exception("frame failed")
            self.ui.recover()
            self.ui.toast(f"{type(err).__name__}: {err}", "error")
            return self.running

    def _step(self) -> bool:
        t0 = time.perf_counter()
        if self.settle_gc and not self._gc_frozen:
            self._settle_gc()
        events = pygame.event.get()
        for e in events:
            if e.type == pygame.QUIT:
                self.running = False
        results = self.worker.poll()
        self.st.poll()
        if not self._needs_draw(events, results):
            self.skipped += 1
            return self.running
        ui = self.ui
        ui.surface = pygame.display.get_surface()
        if self._view_only and self._draw_view(events):
            self.frame_ms.append((time.perf_counter() - t0) * 1000)
            return self.running
        self._full_at = time.monotonic()
        ui.begin(events)
        self._shortcuts()
        bar, main, panel = self.layout()
        ui.surface.fill(th.BG)
        ui.rect(panel, th.PANEL)
        self._tab_bar(bar)
        files = ui.take_dropped()
        if files:
            self.st.add_to_queue(files)
        self._draw_tab(main, panel)
        try:
            ui.end()
        except Exception as err:  # a deferred overlay of a tab
            ui.recover()
            self._tab_failed(err)
        self._draw_banner(main)
        pygame.display.flip()
        self.frame_ms.append((time.perf_counter() - t0) * 1000)
        if len(self.frame_ms) > 100_000:
            del self.frame_ms[:50_000]
        return self.running

    def _settle_gc(self) -> None:
        """Once start-up is over (the models listed, the first model loaded): collect, then freeze
        what is alive (gc.freeze), so later full collections skip the start-up's objects (the
        modules, numba's types, fonts). Those collections had taken 16-48 ms each, every few
        seconds, and each one was a dropped frame. A loaded model holds no reference cycles, so
        a frozen one dropped later is still freed."""
        st = self.st
        if st.listed and not st.loading and not self.worker.busy:
            self._gc_frozen = True
            gc.collect()
            gc.freeze()

    def _needs_draw(self, events: list, results: int) -> bool:
        """Repaint when anything could look different: input, a finished job, a new training
        snapshot, a changed listing, a widget in use, or IDLE_REDRAW_S without a repaint. A tab
        opts in to this by defining wants_frame(st) (True: draw anyway, e.g. while streaming);
        tabs without it are drawn every frame."""
        st, now = self.st, time.monotonic()
        key = (
            id(st.snapshot),
            st.version,
            self.tab,
            len(self.ui.toasts),
            st.loading,
            len(st.busy),
            self.banner,
            pygame.display.get_surface().get_size(),
        )
        # the frame after input is drawn too: widgets drawn before a click see its effect then
        if not events and not pygame.display.get_active():
            # minimized: nothing is on screen until it is restored, which is an event; results
            # and the frame after input wait for it
            return False
        touched = bool(events or results or self._settle or self.ui.active is not None)
        hook = getattr(self.module(self.tab_name), "wants_frame", None)
        # a new snapshot and nothing else: wait for SNAPSHOT_REDRAW_S (the key stays undrawn)
        only_snapshot = key[1:] == self._drawn_key[1:] and not touched
        draw = (
            hook is None
            or touched
            or (key != self._drawn_key and not only_snapshot)
            or (key != self._drawn_key and now - self._drawn_at >= SNAPSHOT_REDRAW_S)
            or now - self._drawn_at > IDLE_REDRAW_S
        )
        if not draw:
            try:
                draw = bool(hook(st))
            except Exception:
                draw = True
        if draw:
            self._drawn_key, self._drawn_at, self._settle = key, now, bool(events or results)
            self._view_only = (
                only_snapshot
                and now - self._full_at < FULL_REDRAW_S
                and not self.ui.toasts
                and not self.banner
                and not self.ui.overlaid
            )
        return draw

    def _draw_view(self, events: list) -> bool:
        """Repaint the main area alone through the tab's draw_view(ui, st, main) -> bool (False:
        it cannot now, e.g. a dialog is open over it; nothing drawn). False where the tab has
        none."""
        hook = getattr(self.module(self.tab_name), "draw_view", None)
        if hook is None:
            return False
        ui = self.ui
        _, main, _ = self.layout()
        ui.begin_region(events, main)
        try:
            if not hook(ui, self.st, main):
                return False
            ui.end()
        except Exception as err:
            ui.recover()
            self._tab_failed(err)
            return False
        pygame.display.update(main)
        self.view_frames += 1
        return True

    def _shortcuts(self) -> None:
        """Global keys, taken before any tab sees them (none of them types a character)."""
        ui = self.ui
        for k in list(ui.f.keys):
            used = True
            if k.ctrl and k.key == pygame.K_q:
                self.running = False
            elif k.ctrl and pygame.K_1 <= k.key <= pygame.K_5:
                self.switch(k.key - pygame.K_1)
            elif k.ctrl and k.key == pygame.K_TAB:
                self.switch(self.tab + (-1 if k.shift else 1))
            elif k.key == pygame.K_F11:
                self.toggle_fullscreen()
            else:
                used = False
            if used:
                ui.f.keys.remove(k)

    def _tab_bar(self, bar: pygame.Rect) -> None:
        w = bar.w / len(TABS)
        for i, (label, _) in enumerate(TABS):
            x0, x1 = round(bar.x + i * w), round(bar.x + (i + 1) * w)
            if self.ui.tab(pygame.Rect(x0, bar.y, x1 - x0, bar.h), label, i == self.tab):
                self.switch(i)
        self._resource_line(pygame.Rect(bar.right, 0, self.ui.surface.get_width() - bar.right, TOP))

    def _resource_line(self, r: pygame.Rect) -> None:
        """The strip beside the tab bar: CPU and memory of the studio and of the process of the
        current model's run (the studio's training process, or a headless run), sampled once a
        second."""
        if r.w < 40:
            return
        now = time.monotonic()
        if now - self._res_at >= 1.0:
            self._res_at = now
            snap, t = self.st.snapshot, self.st.trainer
            if snap is not None and self.st.remote is snap:  # a headless run of this model
                pid = snap.pid
            else:  # our run: its own process, or a thread of ours (its pid is ours)
                pid = t.snapshot().pid if t is not None else None
            here = t is not None and pid == os.getpid()
            self._res_lines = resource_lines(self._procs, pid, here)
        for i, line in enumerate(self._res_lines):
            self.ui.label((r.x + 10, r.y + 4 + 18 * i), line, th.HINT, max_w=r.w - 20)

    def module(self, name: str) -> ModuleType | BaseException:
        if name not in self.modules:
            try:
                self.modules[name] = importlib.import_module(f"app.tabs.{name}")
            except Exception as err:  # a broken tab must not stop the others
                log.exception("cannot import tab %s", name)
                self.modules[name] = err
        return self.modules[name]

    def _draw_tab(self, main: pygame.Rect, panel: pygame.Rect) -> None:
        mod = self.module(self.tab_name)
        if isinstance(mod, BaseException):
            self.banner = (f"The {TABS[self.tab][0]} tab failed to load: {mod}", time.time() + 1)
            return
        try:
            mod.draw(self.ui, self.st, main, panel)
        except Exception as err:
            self.ui.recover()
            self._tab_failed(err)

    def _tab_failed(self, err: BaseException) -> None:
        msg = f"{TABS[self.tab][0]} tab: {type(err).__name__}: {err}"
        if not self.banner or self.banner[0] != msg:
            log.exception("tab %s raised", self.tab_name)
            self.ui.toast(msg, "error")
        self.banner = (msg, time.time() + 8)

    def _draw_banner(self, main: pygame.Rect) -> None:
        if self.banner and self.banner[1] > time.time():
            r = pygame.Rect(main.x + 10, main.y - 18, main.w - 20, 26)
            self.ui.rect(r, (60, 20, 20), th.ERROR)
            self.ui.label((r.x + 8, r.y + 5), self.banner[0], th.ERROR, max_w=r.w - 16)
        elif self.banner:  # expired, and this full frame has drawn over it
            self.banner = None

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        while self.step():
            self.clock.tick(FPS)
        self.close()

    def close(self) -> None:
        """Stop a run we started (it checkpoints), then let the window go."""
        end = time.monotonic() + 10
        while self.worker.busy and time.monotonic() < end:  # a trainer may be starting
            time.sleep(0.02)
            self.worker.poll()
        t = self.st.trainer
        if t is not None:
            t.stop()
            t.join(timeout=30)
        self.st.close_crawl()
        self.worker.stop()
        pygame.quit()

    def pump(self, frames: int = 1) -> None:
        """Draw ``frames`` frames now, whatever changed (screenshots, tests): each shows the
        state of this moment, not the last one the repaint throttle let through."""
        for _ in range(frames):
            self._drawn_key = ()
            self.step()


def resource_lines(procs: dict, run_pid: int | None, training_here: bool) -> list[str]:
    """'Studio: CPU 35% · 410 MB' (with '+ training' while a run trains in this process) and the
    same for the process of a run elsewhere (the studio's own, or a headless run). psutil
    measures CPU since the previous call, so the Process objects are kept in procs between calls
    (the first call gives the average since the process started)."""
    import psutil

    def usage(pid: int) -> str | None:
        try:
            p = procs.get(pid)
            if p is None:  # first sight: the average since the process started
                p = procs[pid] = psutil.Process(pid)
                p.cpu_percent(interval=None)  # (the next call measures from here)
                t = p.cpu_times()
                cpu = 100 * (t.user + t.system) / max(1e-3, time.time() - p.create_time())
            else:
                cpu = p.cpu_percent(interval=None)
            mem = p.memory_info().rss
        except (psutil.Error, OSError):
            procs.pop(pid, None)
            return None
        return f"CPU {cpu:.0f}% · {mem / 2**20:,.0f} MB"

    me = usage(os.getpid())
    lines = [f"Studio{' + training' if training_here else ''}: {me}"] if me else []
    if run_pid and run_pid != os.getpid():
        run = usage(run_pid)
        if run:
            lines.append(f"Training (pid {run_pid}): {run}")
    return lines


def _ignore(_: object) -> None:
    """A result nobody needs (a failed tab import is reported when the tab is shown)."""


# ---------------------------------------------------------------------- measured modes
def wait(studio: Studio, cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        studio.step()
        if cond():
            return True
        studio.clock.tick(FPS)
    return False


SAMPLE_PROMPT = "The model"


def chat_sample(studio: Studio) -> None:
    """Ask the current model one sample prompt on the LLM tab and wait for its reply, so the
    screenshot shows a real exchange (only when the model has been trained at all)."""
    from .tabs import llm as tab_llm

    st = studio.st
    info = st.info()
    if not wait(studio, lambda: tab_llm.ready(st), 30) or not info or not info.meta.steps:
        return
    tab_llm.set_input(st, SAMPLE_PROMPT)
    if tab_llm.send(st):
        wait(studio, lambda: not tab_llm.writing(st), 60)
        studio.pump(3)


def open_first_file(studio: Studio) -> None:
    """Open the Research tab's first file, so its screenshot shows the viewer at work."""
    from .tabs import research as tab_research

    s = tab_research.state(studio.st)
    files = [e for e in tab_research.visible(s) if not e.is_dir]
    if files:
        tab_research.open_file(studio.st, files[0].path)
        wait(studio, lambda: s.view is not None, 10)
        studio.pump(2)


def screenshots(
    studio: Studio, out: Path, model: str | None, train: str | None = None, steps: int = 3
) -> list[Path]:
    """Save a PNG of every tab and of the open model dropdown (after `steps` live training
    steps when a model trains; with `train`, that model is started first)."""
    out.mkdir(parents=True, exist_ok=True)
    st = studio.st
    wait(studio, lambda: st.listed and (st.current or not st.models or st.demo), 60)
    if model:
        wait(studio, lambda: any(m.name == model for m in st.models), 30)
        st.select(model)
    wait(studio, lambda: st.current and not st.loading and not studio.worker.busy, 60)
    if train:
        st.select(train)
        st.start_training(train)
        wait(studio, lambda: st.training, 60)
    if st.training:  # let the live view show real steps
        wait(studio, lambda: st.snapshot is not None and st.snapshot.step >= steps, 300)
    saved = []
    for i, (_, name) in enumerate(TABS):
        studio.switch(i)
        studio.pump(5)
        wait(studio, lambda: not studio.worker.busy, 10)  # a tab's first listing or file read
        if name == "llm":
            chat_sample(studio)
        elif name == "research":
            open_first_file(studio)
        studio.pump(2)
        path = out / f"{name}.png"
        pygame.image.save(pygame.display.get_surface(), str(path))
        saved.append(path)
    studio.switch(1)
    studio.pump(2)
    _, _, panel = studio.layout()
    box = pygame.Rect(panel.x + 10, panel.y + 30, 300, 30)
    for e in (pygame.MOUSEMOTION, pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
        kw = {"pos": box.center}
        if e != pygame.MOUSEMOTION:
            kw["button"] = 1
        pygame.event.post(pygame.event.Event(e, **kw))
        studio.step()
    studio.pump(3)
    path = out / "dropdown.png"
    pygame.image.save(pygame.display.get_surface(), str(path))
    saved.append(path)
    return saved


def frame_stats(frame_ms: list[float]) -> dict:
    """The frames drawn, and their times' p50, p95, p99 and max in ms (benchmarks' JSON)."""
    ms = sorted(frame_ms)
    if not ms:
        return {"frames_drawn": 0}

    def pct(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 2)

    return {
        "frames_drawn": len(ms),
        "frame_ms_p50": pct(50),
        "frame_ms_p95": pct(95),
        "frame_ms_p99": pct(99),
        "frame_ms_max": round(ms[-1], 2),
    }


def bench(studio: Studio, frames: int, name: str | None) -> dict:
    """Render `frames` frames at 60 fps while `name` trains; frame times and training speed."""
    st = studio.st
    wait(studio, lambda: st.listed, 30)
    name = name or DEMO_NAME
    if not st.training:
        wait(studio, lambda: st.info(name) is not None and not studio.worker.busy, 120)
        if st.info(name) is None:
            raise SystemExit(f"error: no model named {name!r}")
        st.select(name)
        st.start_training(name)
    wait(studio, lambda: st.snapshot is not None and st.snapshot.step >= 2, 180)
    if st.trainer is None:
        raise SystemExit(f"error: {name} is not training here (is it busy elsewhere?)")
    trainer = st.trainer
    seconds = frames / FPS

    # Headless and windowed stretches of 2 s alternate, so other load, and the run's own
    # pauses (validation, checkpoints), fall on both alike; one unmeasured pair first.
    rounds = max(4, frames // 120)
    tokens = {"headless": 0, "window": 0}
    wall = {"headless": 0.0, "window": 0.0}
    ui_cpu = {"headless": 0.0, "window": 0.0}  # this (the window's) thread's CPU seconds

    def measure(mode: str, run) -> None:
        n0, t0, c0 = trainer.snapshot().tokens, time.monotonic(), time.thread_time()
        run()
        tokens[mode] += trainer.snapshot().tokens - n0
        wall[mode] += time.monotonic() - t0
        ui_cpu[mode] += time.thread_time() - c0

    def render(n: int) -> None:
        for _ in range(n):
            studio.step()
            studio.clock.tick(FPS)

    time.sleep(1.0)
    render(FPS)
    studio.frame_ms.clear()
    studio.skipped = studio.view_frames = 0
    for i in range(rounds):
        n = frames // rounds + (1 if i < frames % rounds else 0)
        measure("headless", lambda n=n: time.sleep(n / FPS))  # the main thread only sleeps
        measure("window", lambda n=n: render(n))
    headless = tokens["headless"] / wall["headless"]
    with_ui = tokens["window"] / wall["window"]
    return {
        "frames": frames,
        **frame_stats(studio.frame_ms),  # the others had nothing new to show: not repainted
        "size": list(pygame.display.get_surface().get_size()),
        "model": name,
        "train_tokens_per_s": round(with_ui, 1),
        "headless_tokens_per_s": round(headless, 1),
        "ratio": round(with_ui / headless, 3) if headless else None,
        # the window thread's CPU time over the windowed stretches' wall time: a share of one core
        "window_thread_cpu_share": round(ui_cpu["window"] / wall["window"], 3),
        "main_area_only_frames": studio.view_frames,  # of frames_drawn: the panel kept
        "cpus": os.cpu_count(),
        "seconds": round(seconds, 2),
        "run_state": trainer.snapshot().state,  # "running": the run lasted the whole bench
        "run_message": trainer.snapshot().message,
    }


def bench_chat(studio: Studio, replies: int, name: str | None) -> dict:
    """Replies in the LLM tab, idle and then while `name` trains in the studio: seconds from Send
    to the first token and tokens/s of writing (the bubbles' own figures), the training's speed
    while the replies run against alone, and the frame times meanwhile."""
    from .tabs import llm

    st = studio.st
    wait(studio, lambda: st.listed, 30)
    name = name or DEMO_NAME
    wait(studio, lambda: st.info(name) is not None and not studio.worker.busy, 120)
    if st.info(name) is None:
        raise SystemExit(f"error: no model named {name!r}")
    st.select(name)
    studio.switch(0)  # the LLM tab
    s = llm.state(st)
    s.params.update(temperature=0.0, max_tokens=64, top_k=0)  # greedy: the same reply each time

    def ask(n: int) -> list[dict]:
        out = []
        for _ in range(n):
            s.input = "The model"
            wait(studio, lambda: llm.can_send(st), 60)
            if not llm.send(st):
                raise SystemExit("error: the LLM tab did not take the message")
            msg = llm.conversation(st)["messages"][-1]
            wait(studio, lambda m=msg: m.get("state") != "writing", 120)
            out.append(msg.get("stats") or {})
        return out

    def summary(stats: list[dict]) -> dict:
        firsts = [x["first_s"] for x in stats if x.get("first_s") is not None]
        speeds = [x["tok_s"] for x in stats if x.get("tok_s")]
        return {
            "first_token_s_median": round(sorted(firsts)[len(firsts) // 2], 3) if firsts else None,
            "first_token_s_max": round(max(firsts), 3) if firsts else None,
            "tokens_per_s_median": sorted(speeds)[len(speeds) // 2] if speeds else None,
        }

    ask(1)  # load the chat copy and compile, outside the figures
    idle = summary(ask(replies))
    st.start_training(name)
    wait(studio, lambda: st.snapshot is not None and st.snapshot.step >= 2, 180)
    trainer = st.trainer
    if trainer is None:
        raise SystemExit(f"error: {name} is not training here (is it busy elsewhere?)")

    def speed(run) -> float:
        n0, t0 = trainer.snapshot().tokens, time.monotonic()
        run()
        return (trainer.snapshot().tokens - n0) / (time.monotonic() - t0)

    alone = speed(lambda: wait(studio, lambda: False, 3.0))
    studio.frame_ms.clear()
    stats: list[dict] = []
    beside = speed(lambda: stats.extend(ask(replies)))
    busy = summary(stats)
    ratio = (
        busy["tokens_per_s_median"] / idle["tokens_per_s_median"]
        if busy["tokens_per_s_median"] and idle["tokens_per_s_median"]
        else None
    )
    return {
        "model": name,
        "replies": replies,
        "idle": idle,
        "training": busy,
        "speed_while_training_vs_idle": round(ratio, 3) if ratio else None,
        "train_tokens_per_s_alone": round(alone, 1),
        "train_tokens_per_s_during_replies": round(beside, 1),
        **frame_stats(studio.frame_ms),
        "run_state": trainer.snapshot().state,
    }


# ---------------------------------------------------------------------- command line
def parse_size(s: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1600x900, got {s!r}") from None
    if not (320 <= w <= 16384 and 240 <= h <= 16384):
        raise argparse.ArgumentTypeError(f"size {s} is out of range (320x240 to 16384x16384)")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="Crystalline CLLM studio")
    p.add_argument("--fullscreen", action="store_true", help="start full screen (F11 toggles)")
    p.add_argument("--size", type=parse_size, default=(1600, 900), help="window size WxH")
    p.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="models folder (default: $CLLM_MODELS_DIR or ./models)",
    )
    p.add_argument("--kiosk", action="store_true", help="full-screen attract loop")
    p.add_argument(
        "--screenshot",
        type=Path,
        metavar="DIR",
        help="save a PNG of every tab and of the open dropdown to DIR, then exit",
    )
    p.add_argument("--model", help="the model to show in --screenshot")
    p.add_argument(
        "--bench-frames",
        type=int,
        metavar="N",
        help="render N frames while a model trains; print one JSON line",
    )
    p.add_argument(
        "--bench-chat",
        type=int,
        metavar="N",
        help="N replies in the LLM tab idle, then N while a model trains; print one JSON line",
    )
    p.add_argument(
        "--train",
        metavar="NAME",
        help="the model to train in --bench-frames, --bench-chat (and --screenshot)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=3,
        help="--screenshot waits for this many training steps of a live run",
    )
    p.add_argument(
        "--no-demo",
        action="store_true",
        help="do not create the demo model on an empty models folder",
    )
    return p


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    size = (1600, 900) if args.bench_frames or args.bench_chat else args.size
    # SDL would turn SIGTERM into a window-close event, which the kiosk rightly ignores; keep
    # Python's signals instead: SIGINT raises KeyboardInterrupt and SIGTERM SystemExit, and
    # either way close() below stops a training run with a checkpoint.
    os.environ.setdefault("SDL_NO_SIGNAL_HANDLERS", "1")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    kiosk_tmp = None
    if args.kiosk:  # never the user's folder: a temporary copy, removed at the end
        kiosk = importlib.import_module("app.kiosk")
        user_dir = args.models_dir or os.environ.get("CLLM_MODELS_DIR") or "models"
        studio, kiosk_tmp = kiosk.open_studio(user_dir, size)
    else:
        studio = Studio(size, args.models_dir, fullscreen=args.fullscreen, demo=not args.no_demo)
    studio.settle_gc = True
    from cllm.engine import warm

    warm.start()  # a fresh install's first reply need not wait for the compiler
    try:
        if args.screenshot:
            for path in screenshots(studio, args.screenshot, args.model, args.train, args.steps):
                print(path)
            return 0
        if args.bench_frames:
            print(json.dumps(bench(studio, args.bench_frames, args.train)))
            return 0
        if args.bench_chat:
            print(json.dumps(bench_chat(studio, args.bench_chat, args.train)))
            return 0
        if args.kiosk:
            kiosk.run(studio)
            return 0
        while studio.step():
            studio.clock.tick(FPS)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        studio.close()
        if kiosk_tmp is not None:
            shutil.rmtree(kiosk_tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
