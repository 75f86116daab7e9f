"""Immediate-mode widgets on pygame-ce, in the manner of microui and Dear ImGui.

A widget is a method call that draws itself and returns what happened this frame:
``if ui.button(rect, "Save"): ...``. No widget objects mirror the data; callers pass the data in
fresh every frame. The context holds the little state there is: which id is hot (under the mouse),
active (pressed or dragged), focused (gets the keys), per-id scraps (scroll offsets, edit buffers),
and this frame's input, which widgets consume so that one click or key acts once.

Overlays (dropdown lists, dialogs) register a capture rectangle; for the next frame, widgets
beneath a capture rectangle see no mouse, so a click on an overlay never reaches what lies under it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pygame

from . import theme as th

RectLike = pygame.Rect | tuple[int, int, int, int]


@dataclass
class Key:
    key: int
    mod: int
    unicode: str

    @property
    def ctrl(self) -> bool:
        return bool(self.mod & (pygame.KMOD_CTRL | pygame.KMOD_META))

    @property
    def shift(self) -> bool:
        return bool(self.mod & pygame.KMOD_SHIFT)


@dataclass
class InputResult:
    text: str
    changed: bool = False
    submitted: bool = False
    cancelled: bool = False
    focused: bool = False


@dataclass
class Control:
    """What the mouse did to one widget this frame (microui's update_control)."""

    over: bool = False  # under the mouse and not covered by an overlay (hot)
    active: bool = False  # pressed inside it and not yet released (held or dragged)
    pressed: bool = False  # the press that made it active came this frame
    clicked: bool = False  # released over it after a press inside it: the usual "click"
    double: bool = False  # this press came within DOUBLE_S of the previous press on it


DOUBLE_S = 0.4


@dataclass
class Toast:
    text: str
    color: th.Color
    until: float


@dataclass
class _Layer:
    name: str
    rect: pygame.Rect


@dataclass
class _Frame:
    """This frame's input, consumed by the widgets that use it."""

    mouse: tuple[int, int] = (-1, -1)
    down: bool = False
    pressed: bool = False  # went down this frame
    released: bool = False
    click_taken: bool = False
    wheel: int = 0
    keys: list[Key] = field(default_factory=list)
    typed: str = ""
    dropped: list[str] = field(default_factory=list)


class UI:
    def __init__(self, surface: pygame.Surface) -> None:
        self.surface = surface
        self.font = th.load_font()
        self.line_h = self.font.get_linesize()
        self.f = _Frame()
        self.hot: str | None = None
        self.active: str | None = None
        self.focus: str | None = None
        self.state: dict[str, dict] = {}
        self.toasts: list[Toast] = []
        self.now = time.monotonic()
        self.frame = 0
        self._layers: list[_Layer] = []
        self._prev_layers: list[_Layer] = []
        self._layer: str | None = None
        self._deferred: list[tuple[str, Callable[[], None]]] = []
        self._clips: list[pygame.Rect] = []
        self._ids: list[str] = []
        self._focus_claimed = False
        self.drawn: dict[str, pygame.Rect] = {}  # widget id -> rect this frame (tests, tours)
        self.texts: list[str] = []  # the labels drawn this frame, in order (tests)
        self._text_at: list[tuple[int, int]] = []  # where each of texts was drawn
        self.last_drawn: dict[str, pygame.Rect] = {}
        self._text_cache: dict[tuple[str, th.Color], pygame.Surface] = {}
        # measured widths and shortened strings: a frame measures the same texts again and
        # again (elide's search alone measures a long log line a dozen times)
        self._size_cache: dict[str, tuple[int, int]] = {}
        self._elide_cache: dict[tuple[str, int], str] = {}
        self._overlay: pygame.Surface | None = None
        self._clipboard = ""  # fallback when the system clipboard is unavailable
        self._fades: dict[tuple, pygame.Surface] = {}  # edge gradients by (w, h, color, top)

    # ---------------------------------------------------------------- frame
    def begin(self, events: Sequence[pygame.event.Event]) -> None:
        """Take one frame's events; the mouse position is the last one seen."""
        self.now = time.monotonic()
        self.frame += 1
        f = _Frame(mouse=self.f.mouse, down=self.f.down)
        for e in events:
            if e.type == pygame.MOUSEMOTION:
                f.mouse = e.pos
            elif e.type == pygame.MOUSEBUTTONDOWN and e.button == 1:
                f.mouse, f.down, f.pressed = e.pos, True, True
            elif e.type == pygame.MOUSEBUTTONUP and e.button == 1:
                f.mouse, f.down, f.released = e.pos, False, True
            elif e.type == pygame.MOUSEWHEEL:
                f.wheel += e.y
            elif e.type == pygame.KEYDOWN:
                f.keys.append(Key(e.key, e.mod, getattr(e, "unicode", "")))
            elif e.type == pygame.TEXTINPUT:
                f.typed += e.text
            elif e.type == pygame.DROPFILE:
                f.dropped.append(e.file)
            elif e.type == pygame.WINDOWLEAVE:
                f.mouse = (-1, -1)
        self.f = f
        self.hot = None
        self._focus_claimed = False
        self.last_drawn, self.drawn = self.drawn, {}
        self.texts, self._text_at = [], []
        self._layers, self._layer, self._clips, self._ids = [], None, [], []

    @property
    def overlaid(self) -> bool:
        """The last frame drew an overlay or a dialog (a layer over the tab)."""
        return bool(self._prev_layers)

    def begin_region(self, events: Sequence[pygame.event.Event], rect: pygame.Rect) -> None:
        """``begin`` for a frame that repaints only ``rect``: what the last frame drew outside
        it stays on screen, so its widgets (``drawn``) and labels (``texts``) are kept."""
        rect = pygame.Rect(rect)
        drawn = {k: r for k, r in self.drawn.items() if not rect.colliderect(r)}
        texts = zip(self.texts, self._text_at, strict=True)
        kept = [(t, p) for t, p in texts if not rect.collidepoint(p)]
        self.begin(events)
        self.drawn.update(drawn)
        self.texts = [t for t, _ in kept]
        self._text_at = [p for _, p in kept]

    def end(self) -> None:
        """Draw deferred overlays and toasts, then settle active and focus for the next frame."""
        deferred, self._deferred = self._deferred, []
        for name, fn in deferred:
            self._layer = name
            fn()
        self._layer = None
        self._draw_toasts()
        if self.f.released:
            self.active = None
        if self.f.pressed and not self._focus_claimed:
            self.focus = None  # a click anywhere else drops keyboard focus
        self._prev_layers = self._layers

    def recover(self) -> None:
        """Reset drawing state after a tab raised halfway through a frame."""
        self._layer, self._clips, self._ids = None, [], []
        self.surface.set_clip(None)

    # ---------------------------------------------------------------- ids, input
    def id(self, key: str) -> str:
        return "/".join([*self._ids, key])

    @contextmanager
    def scope(self, name: str):
        self._ids.append(name)
        try:
            yield
        finally:
            self._ids.pop()

    def blocked(self) -> bool:
        """An overlay drawn last frame above the current layer covers the mouse."""
        names = [layer.name for layer in self._prev_layers]
        if self._layer is None:
            above = self._prev_layers
        elif self._layer in names:
            above = self._prev_layers[names.index(self._layer) + 1 :]
        else:
            above = []
        return any(layer.rect.collidepoint(self.f.mouse) for layer in above)

    def hover(self, rect: RectLike) -> bool:
        if self._clips and not self._clips[-1].collidepoint(self.f.mouse):
            return False
        return pygame.Rect(rect).collidepoint(self.f.mouse) and not self.blocked()

    def take_click(self, rect: RectLike) -> bool:
        """A press inside rect this frame that nothing else took."""
        if self.f.pressed and not self.f.click_taken and self.hover(rect):
            self.f.click_taken = True
            return True
        return False

    def take_wheel(self, rect: RectLike) -> int:
        if self.f.wheel and self.hover(rect):
            w, self.f.wheel = self.f.wheel, 0
            return w
        return 0

    def take_key(self, key: int, *, ctrl: bool | None = None) -> bool:
        for k in self.f.keys:
            if k.key == key and (ctrl is None or k.ctrl == ctrl):
                self.f.keys.remove(k)
                return True
        return False

    def take_dropped(self) -> list[str]:
        files, self.f.dropped = self.f.dropped, []
        return files

    def behaviour(
        self, wid: str, rect: RectLike, *, enabled: bool = True, hit: RectLike | None = None
    ) -> Control:
        """The one hot/active/click rule every widget uses (microui's update_control): a widget
        under the mouse is hot; a press inside `hit` (default: rect) makes it active until the
        button goes up; a release over it while active is a click. The rect is recorded in
        `drawn` (its visible part, inside the current clip) for tests and layout checks."""
        r = pygame.Rect(rect)
        self.record(wid, r)
        c = Control()
        if not enabled:
            if self.active == wid:
                self.active = None
            return c
        c.over = self.hover(r)
        if c.over:
            self.hot = wid
            if self.take_click(r if hit is None else hit):
                self.active = wid
                c.pressed = True
                st = self.state.setdefault(wid, {})
                px, py = st.get("pressed_pos", (-99, -99))
                near = abs(px - self.f.mouse[0]) + abs(py - self.f.mouse[1]) <= 6
                c.double = near and self.now - st.get("pressed_at", -1e9) < DOUBLE_S
                st["pressed_at"] = -1e9 if c.double else self.now
                st["pressed_pos"] = self.f.mouse
        c.active = self.active == wid
        c.clicked = c.active and self.f.released and c.over
        return c

    def record(self, wid: str, rect: RectLike) -> None:
        """Note where widget wid was drawn this frame (the part inside the current clip)."""
        r = pygame.Rect(rect)
        if self._clips:
            r = r.clip(self._clips[-1])
        self.drawn[wid] = r

    def dragging(self, key: str) -> bool:
        """Is the widget `key` (in the current scope) held down right now (a slider dragged)?"""
        return self.active == self.id(key)

    def dragging_any(self, prefix: str = "") -> bool:
        """Is any widget whose key starts with prefix (in the current scope) held down?"""
        return self.active is not None and self.active.startswith(self.id(prefix))

    def claim_focus(self, wid: str) -> None:
        self.focus = wid
        self._focus_claimed = True

    # ---------------------------------------------------------------- layers, clipping
    def add_layer(self, name: str, rect: RectLike) -> None:
        """Register an overlay: from next frame on, widgets beneath rect see no mouse."""
        self._layers.append(_Layer(name, pygame.Rect(rect)))

    def defer(self, name: str, fn: Callable[[], None]) -> None:
        """Draw fn at the end of the frame, above everything, as overlay `name`."""
        self._deferred.append((name, fn))

    @contextmanager
    def clip(self, rect: RectLike):
        r = pygame.Rect(rect)
        if self._clips:
            r = r.clip(self._clips[-1])
        self._clips.append(r)
        self.surface.set_clip(r)
        try:
            yield r
        finally:
            self._clips.pop()
            self.surface.set_clip(self._clips[-1] if self._clips else None)

    # ---------------------------------------------------------------- drawing primitives
    def rect(
        self, rect: RectLike, fill: th.Color | None, border: th.Color | None = None, width: int = 1
    ) -> None:
        if fill is not None:
            pygame.draw.rect(self.surface, fill, rect)
        if border is not None:
            pygame.draw.rect(self.surface, border, rect, width)

    def render(self, s: str, color: th.Color) -> pygame.Surface:
        key = (s, color)
        surf = self._text_cache.get(key)
        if surf is None:
            if len(self._text_cache) > 3000:  # numbers change every frame; keep the cache bounded
                self._text_cache.clear()
            try:
                surf = self.font.render(_printable(s), True, color)
            except pygame.error:  # nothing visible to draw (a soft hyphen alone, say)
                surf = pygame.Surface((0, self.line_h), pygame.SRCALPHA)
            self._text_cache[key] = surf
        return surf

    def text_size(self, s: str) -> tuple[int, int]:
        size = self._size_cache.get(s)
        if size is None:
            if len(self._size_cache) > 5000:  # bounded, as the rendered texts are
                self._size_cache.clear()
            size = self._size_cache[s] = self.font.size(_printable(s))
        return size

    def elide(self, s: str, width: int) -> str:
        """Shorten s with an ellipsis so that it fits width pixels."""
        if self.text_size(s)[0] <= width:
            return s
        key = (s, width)
        short = self._elide_cache.get(key)
        if short is not None:
            return short
        lo, hi = 0, len(s)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.text_size(s[:mid] + "…")[0] <= width:
                lo = mid
            else:
                hi = mid - 1
        if len(self._elide_cache) > 2000:
            self._elide_cache.clear()
        short = self._elide_cache[key] = s[:lo] + "…"
        return short

    def fit(self, width: int, *labels: str, pad: int = 12) -> str:
        """The first of ``labels`` (longest first) that fits ``width`` pixels with ``pad`` to
        spare; the last one otherwise. A button names itself in full where there is room."""
        for s in labels:
            if self.text_size(s)[0] + pad <= width:
                return s
        return labels[-1]

    def label(
        self,
        pos: tuple[int, int],
        s: str,
        color: th.Color = th.TEXT,
        *,
        max_w: int | None = None,
        align: str = "left",
    ) -> int:
        """Draw one line of text at pos (its top-left, or top-right with align='right');
        returns its width."""
        if max_w is not None:
            s = self.elide(s, max_w)
        self.texts.append(s)
        self._text_at.append(pos)
        surf = self.render(s, color)
        x, y = pos
        if align == "right":
            x -= surf.get_width()
        elif align == "center":
            x -= surf.get_width() // 2
        self.surface.blit(surf, (x, y))
        return surf.get_width()

    def text_center(self, rect: RectLike, s: str, color: th.Color = th.TEXT) -> None:
        r = pygame.Rect(rect)
        s = self.elide(s, r.w - 8)
        self.texts.append(s)
        self._text_at.append(r.center)
        surf = self.render(s, color)
        self.surface.blit(surf, surf.get_rect(center=r.center))

    def wrap(self, s: str, width: int) -> list[str]:
        """Split text into lines on words (long words are cut) to fit width pixels."""
        lines: list[str] = []
        for para in s.split("\n"):
            line = ""
            for word in para.split(" "):
                cand = word if not line else line + " " + word
                if self.text_size(cand)[0] <= width:
                    line = cand
                    continue
                if line:
                    lines.append(line)
                while self.text_size(word)[0] > width and len(word) > 1:
                    cut = len(word)
                    while cut > 1 and self.text_size(word[:cut])[0] > width:
                        cut -= 1
                    lines.append(word[:cut])
                    word = word[cut:]
                line = word
            lines.append(line)
        return lines

    def flow(self, parts: Sequence[str], sep: str, width: int) -> list[str]:
        """Labelled figures joined by sep into as few lines as fit width (a figure is never
        split across lines, unlike wrap's words)."""
        lines: list[str] = []
        for part in parts:
            if lines and self.text_size(lines[-1] + sep + part)[0] <= width:
                lines[-1] += sep + part
            else:
                lines.append(part)
        return lines

    def section(self, pos: tuple[int, int], title: str) -> None:
        self.label(pos, title, th.ACCENT)

    # ---------------------------------------------------------------- widgets
    def button(
        self,
        rect: RectLike,
        label: str,
        *,
        key: str | None = None,
        enabled: bool = True,
        fill: th.Color = th.BUTTON,
        text: th.Color = th.TEXT,
        border: th.Color = th.BUTTON_BORDER,
    ) -> bool:
        """A push button; True on the frame a press inside it is released inside it."""
        r = pygame.Rect(rect)
        c = self.behaviour(self.id(key or label), r, enabled=enabled)
        over, clicked = c.over, c.clicked
        if not enabled:
            fill, text, border = th.mix(fill, th.BG, 0.5), th.DIM, th.DIM
        elif c.active and over:
            fill = th.shade(fill, -25)
        elif over:
            fill = th.shade(fill, 25)
        self.rect(r, fill, border)
        self.text_center(r, label, text)
        return clicked

    def choice(
        self,
        rect: RectLike,
        label: str,
        chosen: bool,
        *,
        key: str | None = None,
        enabled: bool = True,
    ) -> bool:
        """One button of a set of options (a filter, a sort, a preset), drawn selected when it
        is the chosen one; True when clicked."""
        return self.button(
            rect,
            label,
            key=key,
            enabled=enabled,
            fill=th.TAB_ACTIVE if chosen else th.BUTTON,
            text=th.WHITE if chosen else th.TEXT,
            border=th.TAB_OUTLINE if chosen else th.BUTTON_BORDER,
        )

    def tab(self, rect: RectLike, label: str, selected: bool) -> bool:
        r = pygame.Rect(rect)
        c = self.behaviour(self.id("tab:" + label), r)
        fill = th.TAB_ACTIVE if selected else th.TAB
        if c.over:
            fill = th.shade(fill, -15 if c.active else 20)
        self.rect(r, fill, th.TAB_OUTLINE)
        self.label((r.x + 10, r.y + 12), label, th.TAB_LABEL, max_w=r.w - 14)
        return c.clicked

    def checkbox(
        self,
        rect: RectLike,
        label: str,
        value: bool,
        *,
        key: str | None = None,
        enabled: bool = True,
    ) -> bool:
        """Returns the new value."""
        r = pygame.Rect(rect)
        box = pygame.Rect(r.x, r.centery - 8, 16, 16)
        c = self.behaviour(self.id(key or "cb:" + label), r, enabled=enabled)
        if c.clicked:
            value = not value
        fill = th.shade(th.LIST_BG, 10 if c.active else 30) if c.over else th.LIST_BG
        self.rect(box, fill, th.HINT if enabled else th.DIM)
        if value:
            pygame.draw.lines(
                self.surface,
                th.ACCENT,
                False,
                [(box.x + 3, box.y + 8), (box.x + 7, box.y + 12), (box.x + 13, box.y + 4)],
                2,
            )
        self.label(
            (box.right + 8, r.centery - self.line_h // 2),
            label,
            th.TEXT if enabled else th.DIM,
            max_w=r.right - box.right - 8,
        )
        return value

    def slider(
        self,
        rect: RectLike,
        label: str,
        value: float,
        lo: float,
        hi: float,
        *,
        key: str | None = None,
        log: bool = False,
        integer: bool = False,
        fmt: str = "{:g}",
        enabled: bool = True,
        clamp: Callable[[float], float] | None = None,
        snaps: Sequence[float] | None = None,
        wheel: bool | str = True,
    ) -> tuple[float, bool]:
        """A labelled slider (text line above, track below) moved by click, drag, wheel and the
        arrow keys. Returns (value, committed): while dragging, value follows the mouse and
        committed is False; committed is True when an edit ends (release, wheel, key, typed).
        snaps: the values it may take (batch sizes, sequence lengths), nearest one wins.
        A double-click on it, or Enter while it has the focus, opens a field to type an exact
        value (Enter sets it, Esc cancels). clamp(value) narrows the range to what is allowed
        now (the caller explains why). wheel="focused": the wheel moves it only once it has the
        focus (in a scrolling panel, so that scrolling past it never changes it)."""
        r = pygame.Rect(rect)
        wid = self.id(key or "sl:" + label)
        track = pygame.Rect(r.x, r.y + self.line_h + 2, r.w, max(10, r.h - self.line_h - 2))
        st = self.state.setdefault(wid, {})
        to_t = (
            (lambda v: math.log(v / lo) / math.log(hi / lo))
            if log
            else (lambda v: (v - lo) / (hi - lo) if hi > lo else 0.0)
        )
        from_t = (lambda t: lo * (hi / lo) ** t) if log else (lambda t: lo + t * (hi - lo))
        grid = sorted(v for v in (snaps or ()) if lo <= v <= hi)

        def snap(v: float) -> float:
            v = min(hi, max(lo, v))
            if grid:
                return float(min(grid, key=lambda g: abs(to_t(g) - to_t(v))))
            if integer:
                return float(round(v))
            if log:  # three significant digits are all a learning rate needs
                return float(f"{v:.3g}")
            return v

        def step(v: float, n: int) -> float:
            if grid:
                i = min(range(len(grid)), key=lambda j: abs(grid[j] - v))
                if grid[i] != v and (grid[i] > v) == (n > 0):
                    n -= 1 if n > 0 else -1  # between two snaps: the first step lands on one
                return float(grid[max(0, min(len(grid) - 1, i + n))])
            if integer:
                return snap(round(v) + n)
            if log:
                return snap(v * 10 ** (n / 20))
            return snap(v + n * (hi - lo) / 100)

        def exact(v: float) -> float:  # a typed value is kept as typed, within the range
            v = min(hi, max(lo, v))
            return float(round(v)) if integer else float(f"{v:.3g}") if log else v

        committed = False
        if "typing" in st:  # an exact value being typed: the field replaces the track
            self.record(wid, r)
            value, committed = self._slider_typed(wid, st, r, track, label, value, exact)
            if committed and clamp is not None:
                value = clamp(value)
            return value, committed
        c = self.behaviour(wid, r, enabled=enabled)
        if c.pressed:
            self.claim_focus(wid)
            if not track.inflate(0, 8).collidepoint(self.f.mouse):
                self.active = None  # a press on the label focuses, only the track drags
            if c.double:  # a double-click types an exact value instead of dragging
                self.active = None
                self._start_typing(wid, st, value, fmt, integer)
                return value, False
        if c.over and (wheel is True or (wheel == "focused" and self.focus == wid)):
            n = self.take_wheel(r)
            if n:
                value, committed = step(value, n), True
        if enabled and self.active == wid:
            t = (self.f.mouse[0] - track.x) / max(1, track.w)
            st["drag"] = snap(from_t(min(1.0, max(0.0, t))))
            value = st["drag"]
            if self.f.released:
                committed = True
                st.pop("drag", None)
        if enabled and self.focus == wid:
            for k, n in (
                (pygame.K_LEFT, -1),
                (pygame.K_DOWN, -1),
                (pygame.K_RIGHT, 1),
                (pygame.K_UP, 1),
            ):
                while self.take_key(k, ctrl=False):
                    value, committed = step(value, n), True
            if self.take_key(pygame.K_RETURN) or self.take_key(pygame.K_KP_ENTER):
                self._start_typing(wid, st, value, fmt, integer)
        if clamp is not None:
            value = clamp(value)
            if "drag" in st:
                st["drag"] = value
        # draw
        col = th.TEXT if enabled else th.DIM
        self.label((r.x, r.y), label, col)
        self.label(
            (r.right, r.y), fmt.format(value), th.SELECTED if enabled else th.DIM, align="right"
        )
        t = min(1.0, max(0.0, to_t(value))) if value > 0 or not log else 0.0
        mid = track.centery
        self.rect((track.x, mid - 2, track.w, 4), th.LIST_BG, th.DIM)
        self.rect(
            (track.x, mid - 2, int(track.w * t), 4),
            th.mix(th.ACCENT, th.BG, 0.4) if enabled else th.DIM,
        )
        hx = track.x + int(t * (track.w - 10))
        handle = pygame.Rect(hx, track.y, 10, track.h)
        hc = th.ACCENT if enabled else th.DIM
        if enabled and (self.active == wid or c.over):
            hc = th.shade(hc, 40)
        self.rect(handle, hc, th.WHITE if self.focus == wid else None)
        return value, committed

    def _start_typing(self, wid: str, st: dict, value: float, fmt: str, integer: bool) -> None:
        shown = str(int(round(value))) if integer else fmt.format(value)
        st["typing"] = shown
        st.pop("drag", None)
        self.focus = wid + "/type"

    def _slider_typed(
        self,
        wid: str,
        st: dict,
        r: pygame.Rect,
        track: pygame.Rect,
        label: str,
        value: float,
        snap: Callable[[float], float],
    ) -> tuple[float, bool]:
        """The slider's exact-value field: Enter sets the typed number (snapped into range)."""
        self.label((r.x, r.y), label + " (type a value, Enter)", th.TEXT)
        box = pygame.Rect(track.x, track.y - 2, track.w, max(20, track.h + 4))
        field = wid + "/type"
        if self.focus != field:  # clicked elsewhere: the typed value is dropped
            st.pop("typing", None)
            return value, False
        self._ids.append(wid.rsplit("/", 1)[-1])
        try:
            res = self.text_input(box, "type", st["typing"])
        finally:
            self._ids.pop()
        st["typing"] = res.text
        if res.cancelled:
            st.pop("typing", None)
            self.focus = wid
            return value, False
        if res.submitted:
            st.pop("typing", None)
            self.focus = wid
            try:
                typed = float(res.text.replace(",", "").strip())
            except ValueError:
                self.toast(f"{label}: {res.text!r} is not a number", "error")
                return value, False
            if not math.isfinite(typed):
                return value, False
            return snap(typed), True
        return value, False

    def text_input(
        self, rect: RectLike, key: str, text: str, *, placeholder: str = "", enabled: bool = True
    ) -> InputResult:
        """A one-line text field. While focused it edits its own buffer (returned as .text);
        Enter submits, Esc restores the text it had when focused. Keys it takes never reach
        shortcuts."""
        r = pygame.Rect(rect)
        wid = self.id(key)
        st = self.state.setdefault(wid, {})
        res = InputResult(text)
        c = self.behaviour(wid, r, enabled=enabled)
        over = c.over
        if over:
            if c.pressed:
                if self.focus != wid or "buf" not in st:
                    st.update(buf=text, orig=text, all=False)
                self.claim_focus(wid)
                st["cur"] = self._cursor_at(st["buf"], self.f.mouse[0] - (r.x + 6))
                st["wid_focus"] = self.frame
        focused = enabled and self.focus == wid
        if focused:
            if st.get("wid_focus") not in (self.frame - 1, self.frame) or "buf" not in st:
                # focus just arrived (given by code): edit a fresh copy of the caller's text
                st.update(buf=text, orig=text, cur=len(text), all=False)
            st["wid_focus"] = self.frame
            res = self._edit(st, res)
            res.focused = self.focus == wid
        else:
            st.pop("buf", None)
        # draw
        bg = th.INPUT_BG_FOCUS if focused else th.shade(th.INPUT_BG, 10) if over else th.INPUT_BG
        if not enabled:
            bg = th.mix(th.INPUT_BG, th.BG, 0.5)
        border = th.INPUT_BORDER_FOCUS if focused else th.shade(th.INPUT_BORDER, 40 if over else 0)
        self.rect(r, bg, border, 2 if focused else 1)
        shown = st["buf"] if focused and "buf" in st else res.text
        with self.clip(r.inflate(-4, -2)):
            ty = r.centery - self.line_h // 2
            if not shown and placeholder and not focused:
                self.label((r.x + 6, ty), placeholder, th.DIM)
            x0 = r.x + 6
            if focused:
                cur_x = self.text_size(shown[: st["cur"]])[0]
                x0 -= max(0, cur_x - (r.w - 16))  # keep the cursor in view
                if st.get("all") and shown:
                    self.rect((x0, ty, self.text_size(shown)[0], self.line_h), th.INPUT_SELECTION)
            if shown:
                self.surface.blit(self.render(shown, th.INPUT_TEXT), (x0, ty))
            if focused and int(self.now * 2) % 2 == 0:
                cx = x0 + self.text_size(shown[: st["cur"]])[0]
                pygame.draw.line(
                    self.surface, th.INPUT_CARET, (cx, ty + 1), (cx, ty + self.line_h - 2)
                )
        return res

    def _cursor_at(self, s: str, x: int) -> int:
        for i in range(len(s) + 1):
            if self.text_size(s[:i])[0] >= x:
                return i
        return len(s)

    def _edit(self, st: dict, res: InputResult) -> InputResult:
        buf, cur = st["buf"], min(st["cur"], len(st["buf"]))
        before = buf

        def replace_all_if_selected() -> None:
            nonlocal buf, cur
            if st.get("all"):
                buf, cur, st["all"] = "", 0, False

        for k in list(self.f.keys):
            self.f.keys.remove(k)  # a focused field takes every key: typing never hits shortcuts
            if k.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
                res.submitted = True
                self.focus = None
                break  # what follows in this frame is not for this field any more
            elif k.key == pygame.K_ESCAPE:
                buf, res.cancelled = st["orig"], True
                self.focus = None
                break
            elif k.key == pygame.K_BACKSPACE:
                if st.get("all"):
                    replace_all_if_selected()
                elif cur > 0:
                    buf, cur = buf[: cur - 1] + buf[cur:], cur - 1
            elif k.key == pygame.K_DELETE:
                if st.get("all"):
                    replace_all_if_selected()
                else:
                    buf = buf[:cur] + buf[cur + 1 :]
            elif k.key == pygame.K_LEFT:
                cur, st["all"] = max(0, cur - 1), False
            elif k.key == pygame.K_RIGHT:
                cur, st["all"] = min(len(buf), cur + 1), False
            elif k.key == pygame.K_HOME:
                cur, st["all"] = 0, False
            elif k.key == pygame.K_END:
                cur, st["all"] = len(buf), False
            elif k.ctrl and k.key == pygame.K_a:
                st["all"] = True
            elif k.ctrl and k.key == pygame.K_c:
                self.set_clipboard(buf)
            elif k.ctrl and k.key == pygame.K_v:
                paste = self.get_clipboard().replace("\n", " ").replace("\r", "")
                replace_all_if_selected()
                buf, cur = buf[:cur] + paste + buf[cur:], cur + len(paste)
        if self.f.typed and not res.cancelled:  # text typed in this frame, before Enter
            replace_all_if_selected()
            buf, cur = buf[:cur] + self.f.typed + buf[cur:], cur + len(self.f.typed)
            self.f.typed = ""
        st["buf"], st["cur"] = buf, cur
        res.text, res.changed = buf, buf != before
        return res

    def set_clipboard(self, s: str) -> None:
        self._clipboard = s
        try:
            pygame.scrap.put_text(s)
        except Exception:  # no clipboard under the dummy video driver: keep the local copy
            pass

    def get_clipboard(self) -> str:
        try:
            if pygame.scrap.has_text():
                return pygame.scrap.get_text()
        except Exception:
            pass
        return self._clipboard

    def progress(
        self, rect: RectLike, frac: float, color: th.Color | None = None, text: str | None = None
    ) -> None:
        """A bar whose fill goes from green towards amber as it fills, unless color is given."""
        r = pygame.Rect(rect)
        frac = min(1.0, max(0.0, frac if frac == frac else 0.0))
        self.rect(r, th.METRIC_BG, th.METRIC_BORDER)
        fill = color or th.mix(th.SUCCESS, th.WARNING, frac)
        if frac > 0:
            self.rect((r.x + 1, r.y + 1, max(1, int((r.w - 2) * frac)), r.h - 2), fill)
        if text:  # dark on the fill once it reaches the middle, where the text sits
            self.text_center(r, text, th.BLACK if frac >= 0.5 else th.WHITE)

    def scroll(
        self,
        rect: RectLike,
        key: str,
        content_h: int,
        *,
        step: int = 40,
        stick_bottom: bool = False,
        fade: th.Color | None = None,
    ) -> int:
        """Wheel and scrollbar for a region of content_h pixels shown in rect; returns the
        offset to draw the content at. With stick_bottom, a view scrolled to the end follows new
        content (logs). With ``fade`` (the background's colour), an edge with more content past
        it fades into the background, over the content drawn before this call: a row of
        buttons cut at the edge reads as "more below", not as a broken widget."""
        r = pygame.Rect(rect)
        wid = self.id("scroll:" + key)
        st = self.state.setdefault(wid, {"off": 0, "bottom": True})
        if r.h <= 0 or r.w <= 0:  # squeezed out of a small window: nothing to scroll
            return 0
        max_off = max(0, content_h - r.h)
        off = max_off if stick_bottom and st["bottom"] else st["off"]
        off -= self.take_wheel(r) * step
        if max_off > 0:
            bar = pygame.Rect(r.right - 8, r.y, 8, r.h)
            th_h = max(20, r.h * r.h // content_h)
            if self.behaviour(wid, bar).pressed:
                st["grab"] = None
                thumb = pygame.Rect(bar.x, bar.y + (r.h - th_h) * off // max_off, 8, th_h)
                if thumb.collidepoint(self.f.mouse):
                    st["grab"] = self.f.mouse[1] - thumb.y
            if self.active == wid:
                grab = st.get("grab") if st.get("grab") is not None else th_h // 2
                t = (self.f.mouse[1] - grab - bar.y) / max(1, r.h - th_h)
                off = int(t * max_off)
            off = max(0, min(max_off, off))
            self.rect(bar, th.LIST_BG)
            thumb = pygame.Rect(bar.x + 1, bar.y + (r.h - th_h) * off // max_off, 6, th_h)
            self.rect(
                thumb, th.shade(th.DIM, 30) if self.hot == wid or self.active == wid else th.DIM
            )
        off = max(0, min(max_off, off))
        st["off"], st["bottom"] = off, off >= max_off
        if fade is not None and max_off > 0:
            view = pygame.Rect(r.x, r.y, r.w - 8, r.h)
            if off > 0:
                self._fade_edge(view, fade, top=True)
            if off < max_off:
                self._fade_edge(view, fade, top=False)
        return off

    FADE_H = 18

    def _fade_edge(self, r: pygame.Rect, color: th.Color, top: bool) -> None:
        """The FADE_H pixels at r's top or bottom edge blend into ``color`` (opaque at the edge)."""
        h = min(self.FADE_H, r.h // 3)
        if h <= 0 or r.w <= 0:
            return
        key = (r.w, h, tuple(color), top)
        surf = self._fades.get(key)
        if surf is None:
            surf = pygame.Surface((r.w, h), pygame.SRCALPHA)
            for i in range(h):  # alpha rises towards the edge
                a = (h - i if top else i + 1) * 255 // h
                surf.fill((*color[:3], a), pygame.Rect(0, i, r.w, 1))
            if len(self._fades) > 32:
                self._fades.clear()
            self._fades[key] = surf
        self.surface.blit(surf, (r.x, r.y if top else r.bottom - h))

    def scroll_offset(self, key: str) -> int:
        """The offset scroll(key) returned last frame (to lay out content before calling it)."""
        return self.state.get(self.id("scroll:" + key), {}).get("off", 0)

    def row(
        self,
        rect: RectLike,
        key: str,
        *,
        selected: bool = False,
        enabled: bool = True,
        selected_fill: th.Color | None = th.TAB_ACTIVE,
        hover_fill: th.Color | None = th.SELECTOR_HOVER,
    ) -> Control:
        """One selectable row of a list (a file, a URL, a model card): its background shows
        hover and selection; the caller draws its content on top. Lists select on the press
        (Control.pressed), as file managers do; Control.double is a double-click."""
        r = pygame.Rect(rect)
        c = self.behaviour(self.id(key), r, enabled=enabled)
        if selected and selected_fill is not None:
            self.rect(r, selected_fill)
        elif c.over and hover_fill is not None:
            self.rect(r, th.shade(hover_fill, -10) if c.active else hover_fill)
        return c

    def list_box(
        self,
        rect: RectLike,
        key: str,
        rows: Sequence[str],
        selected: int | None = None,
        *,
        row_h: int = 20,
        empty: str = "",
        colors: Sequence[th.Color | None] | None = None,
    ) -> int | None:
        """A scrollable list of one-line rows; returns the index clicked this frame. ``colors``:
        a row's own text colour (None: the usual), unless it is the selected one."""
        r = pygame.Rect(rect)
        self.rect(r, th.LIST_BG, th.DIM)
        inner = r.inflate(-4, -4)
        off = self.scroll(inner, key, len(rows) * row_h)
        clicked = None
        if not rows and empty:
            self.label((inner.x + 4, inner.y + 2), empty, th.DIM, max_w=inner.w - 8)
        with self.clip(inner):
            first = off // row_h
            for i in range(first, min(len(rows), first + inner.h // row_h + 2)):
                row = pygame.Rect(inner.x, inner.y + i * row_h - off, inner.w - 10, row_h)
                if self.row(row, f"row:{key}:{i}", selected_fill=None).pressed:
                    clicked = i
                own = colors[i] if colors is not None else None
                color = th.SELECTED if i == selected else own or th.TEXT
                self.label(
                    (row.x + 4, row.y + (row_h - self.line_h) // 2), rows[i], color, max_w=row.w - 8
                )
        return clicked

    def chart(
        self,
        rect: RectLike,
        series: Sequence[tuple[str, Sequence[float], Sequence[float], th.Color]],
        *,
        title: str = "",
        x_label: str = "step",
        y_label: str = "loss",
        smooth: bool = False,
    ) -> None:
        """Line chart of (label, xs, ys, colour) series, scaled to fit, axes labelled inside.
        NaN and None values are gaps; long series are thinned to about one point per pixel.
        smooth: a moving average over 1% of each series, so overlaid curves stay legible."""
        r = pygame.Rect(rect)
        self.rect(r, th.METRIC_BG, th.METRIC_BORDER)
        if title:
            self.label((r.x + 8, r.y + 6), title, th.ACCENT, max_w=r.w - 16)
        # the legend sits beside the title, or on a row of its own when they would touch
        legend_w = sum(self.text_size(name)[0] + 16 for name, *_ in series)
        own_row = bool(title) and self.text_size(title)[0] + legend_w + 24 > r.w
        legend_y = r.y + 6 + (self.line_h + 2 if own_row else 0)
        top = 28 + (self.line_h + 2 if own_row else 0)
        plot = pygame.Rect(r.x + 8, r.y + top, r.w - 16, r.h - top - 24)
        for i in range(5):
            y = plot.y + plot.h * i // 4
            pygame.draw.line(self.surface, th.GRID, (plot.x, y), (plot.right, y))
            x = plot.x + plot.w * i // 4
            pygame.draw.line(self.surface, th.GRID, (x, plot.y), (x, plot.bottom))
        data = []
        for name, xs, ys, color in series:
            x = np.asarray(xs, np.float64)
            y = np.array(ys, np.float64)  # None becomes NaN
            n = min(len(x), len(y))
            x, y = x[:n], y[:n]
            ok = np.isfinite(y)
            x, y = x[ok], y[ok]
            k = len(y) // 100
            if smooth and k > 1:
                y = np.convolve(y, np.ones(k) / k, mode="valid")
                x = x[k - 1 :]
            stride = max(1, len(x) // max(1, plot.w))
            data.append((name, x[::stride], y[::stride], color))
        lx = r.right - 8
        for name, _, _, color in reversed(data):
            if lx < r.x + 8:
                break
            w = self.label((lx, legend_y), name, color, align="right")
            lx -= w + 16
        if not any(len(x) for _, x, _, _ in data):
            self.text_center(plot, "no data yet", th.DIM)
            return
        x0 = min(x.min() for _, x, _, _ in data if len(x))
        x1 = max(x.max() for _, x, _, _ in data if len(x))
        y0 = min(y.min() for _, _, y, _ in data if len(y))
        y1 = max(y.max() for _, _, y, _ in data if len(y))
        if x1 == x0:
            x1 = x0 + 1
        if y1 - y0 < 1e-9:
            y0, y1 = y0 - 0.5, y1 + 0.5
        for _, x, y, color in data:
            px = plot.x + (x - x0) / (x1 - x0) * plot.w
            py = plot.bottom - (y - y0) / (y1 - y0) * plot.h
            pts = np.stack([px, py], 1).tolist()
            if len(pts) >= 2:
                pygame.draw.lines(self.surface, color, False, pts, 2)
            elif pts:
                pygame.draw.circle(self.surface, color, pts[0], 3)
        # axis labels inside the plot: y range on the left, x range along the bottom
        for y, text in (
            (plot.y + 2, f"{y1:.3f}"),
            (plot.bottom - self.line_h - 2, f"{y0:.3f}  {y_label}"),
        ):
            w, h = self.text_size(text)  # on a patch of background, readable over the lines
            self.rect((plot.x + 2, y, w + 4, h), th.METRIC_BG)
            self.label((plot.x + 4, y), text, th.HINT)
        self.label((plot.x + 4, r.bottom - self.line_h - 4), f"{x_label} {x0:g}", th.HINT)
        self.label((plot.right, r.bottom - self.line_h - 4), f"{x1:g}", th.HINT, align="right")

    # ---------------------------------------------------------------- dialogs, toasts
    def begin_dialog(self, key: str, size: tuple[int, int], title: str) -> pygame.Rect:
        """A modal dialog: darken everything, draw a centred panel, and capture the mouse.
        Draw its widgets next, then call end_dialog()."""
        sw, sh = self.surface.get_size()
        if self._overlay is None or self._overlay.get_size() != (sw, sh):
            self._overlay = pygame.Surface((sw, sh), pygame.SRCALPHA)
            self._overlay.fill((0, 0, 0, th.OVERLAY_ALPHA))
        self.surface.blit(self._overlay, (0, 0))
        w, h = min(size[0], sw - 20), min(size[1], sh - 20)
        r = pygame.Rect((sw - w) // 2, (sh - h) // 2, w, h)
        self.rect(r, th.DIALOG_BG, th.DIALOG_BORDER, 2)
        self.label((r.x + 15, r.y + 12), title, th.ACCENT)
        self._layer = "dialog:" + key
        self.add_layer(self._layer, (0, 0, sw, sh))
        self._ids.append(self._layer)
        return r

    def end_dialog(self) -> bool:
        """True when Esc asked to close the dialog (a focused field takes Esc first)."""
        self._ids.pop()
        self._layer = None
        return self.take_key(pygame.K_ESCAPE)

    def toast(self, text: str, kind: str = "error", seconds: float = 5.0) -> None:
        color = {"error": th.ERROR, "success": th.SUCCESS, "warning": th.WARNING}.get(kind, th.TEXT)
        text = text.splitlines()[0] if text else text
        self.toasts = [t for t in self.toasts if t.text != text][-4:]
        self.toasts.append(Toast(text, color, self.now + seconds))

    def _draw_toasts(self) -> None:
        self.toasts = [t for t in self.toasts if t.until > self.now]
        sw, sh = self.surface.get_size()
        y = sh - 20
        for t in reversed(self.toasts):
            lines = self.wrap(t.text, min(sw - 64, 900))[:4]  # wrapped, not cut short
            w = max(self.text_size(line)[0] for line in lines) + 24
            h = 14 + self.line_h * len(lines)
            r = pygame.Rect((sw - w) // 2, y - h, w, h)
            self.rect(r, th.DIALOG_BG, t.color, 2)
            for i, line in enumerate(lines):
                self.label((r.x + 12, r.y + 7 + self.line_h * i), line, t.color)
            if self.f.pressed and not self.f.click_taken and r.collidepoint(self.f.mouse):
                self.f.click_taken = True
                t.until = 0
            y -= h + 6


def _printable(s: str) -> str:
    """SDL_ttf refuses NUL and lone surrogates: show them as the replacement character."""
    if "\x00" in s or not s.isprintable():
        s = s.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return s


def plural(n: int, word: str) -> str:
    """plural(1, 'file') -> '1 file'; plural(3, 'file') -> '3 files'."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"
