"""The widget layer on its own: text editing against a reference model (hypothesis), sliders,
click consumption under overlays, buttons' states."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pygame  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from app.ui import UI  # noqa: E402

CTRL = pygame.KMOD_LCTRL
FIELD = (10, 10, 300, 28)


@pytest.fixture(scope="module")
def ui():
    pygame.init()
    pygame.display.set_mode((400, 300))
    return UI(pygame.Surface((400, 300)))


def frame(ui, events=(), fn=lambda ui: None):
    ui.begin(list(events))
    out = fn(ui)
    ui.end()
    return out


def kd(k, mod=0, uni=""):
    return pygame.event.Event(pygame.KEYDOWN, key=k, mod=mod, unicode=uni, scancode=0)


def mouse(kind, pos):
    return pygame.event.Event(kind, pos=pos, button=1)


def focus_field(ui, text=""):
    frame(
        ui,
        [mouse(pygame.MOUSEBUTTONDOWN, (300, 20)), mouse(pygame.MOUSEBUTTONUP, (300, 20))],
        lambda u: u.text_input(FIELD, "f", text),
    )


def edit(ui, events, text=""):
    return frame(ui, events, lambda u: u.text_input(FIELD, "f", text))


OPS = st.one_of(
    st.tuples(st.just("type"), st.text(min_size=1, max_size=4)),
    st.tuples(st.sampled_from(["left", "right", "home", "end", "back", "del", "all"]), st.none()),
)


@settings(max_examples=60, deadline=None)
@given(start=st.text(max_size=8), ops=st.lists(OPS, max_size=12))
def test_text_editing_matches_a_reference(ui, start, ops):
    ui.focus = None
    frame(ui)  # drop any focus left by an earlier example
    ui.focus = ui.id("f")
    edit(ui, [], start)  # focus by code: the cursor starts at the end
    buf, cur, all_sel = start, len(start), False
    keys = {
        "left": pygame.K_LEFT,
        "right": pygame.K_RIGHT,
        "home": pygame.K_HOME,
        "end": pygame.K_END,
        "back": pygame.K_BACKSPACE,
        "del": pygame.K_DELETE,
    }
    for op, arg in ops:
        if op == "type":
            res = edit(ui, [pygame.event.Event(pygame.TEXTINPUT, text=arg)])
            if all_sel:
                buf, cur, all_sel = "", 0, False
            buf, cur = buf[:cur] + arg + buf[cur:], cur + len(arg)
        elif op == "all":
            res = edit(ui, [kd(pygame.K_a, CTRL)])
            all_sel = True
        else:
            res = edit(ui, [kd(keys[op])])
            if op in ("back", "del") and all_sel:
                buf, cur = "", 0
            elif op == "back" and cur > 0:
                buf, cur = buf[: cur - 1] + buf[cur:], cur - 1
            elif op == "del":
                buf = buf[:cur] + buf[cur + 1 :]
            elif op == "left":
                cur = max(0, cur - 1)
            elif op == "right":
                cur = min(len(buf), cur + 1)
            elif op == "home":
                cur = 0
            elif op == "end":
                cur = len(buf)
            all_sel = False
        assert res.text == buf
    ui.focus = None


def test_enter_submits_esc_restores_and_keys_are_consumed(ui):
    ui.focus = None
    focus_field(ui, "abc")
    res = edit(ui, [pygame.event.Event(pygame.TEXTINPUT, text="d"), kd(pygame.K_d, 0, "d")], "abc")
    assert res.text == "abcd" and not ui.f.keys  # the KEYDOWN of a typed key is taken too
    res = edit(ui, [kd(pygame.K_ESCAPE)], "abc")
    assert res.cancelled and res.text == "abc" and ui.focus is None
    focus_field(ui, "abc")
    res = edit(ui, [pygame.event.Event(pygame.TEXTINPUT, text="!"), kd(pygame.K_RETURN)], "abc")
    assert res.submitted and res.text == "abc!" and ui.focus is None


def test_copy_paste(ui):
    ui.focus = None
    focus_field(ui, "hello")
    edit(ui, [kd(pygame.K_a, CTRL), kd(pygame.K_c, CTRL)], "hello")
    edit(ui, [kd(pygame.K_END)], "hello")
    res = edit(ui, [kd(pygame.K_v, CTRL)], "hello")
    assert res.text == "hellohello"


def test_slider_keys_wheel_and_clamp(ui):
    r = (10, 100, 300, 34)
    track_y = 100 + ui.line_h + 8

    def sl(u, v, **kw):
        return u.slider(r, "n", v, 1, 16, integer=True, **kw)

    v, done = frame(ui, [mouse(pygame.MOUSEBUTTONDOWN, (10 + 150, track_y))], lambda u: sl(u, 4))
    assert not done and 8 <= v <= 9  # dragging: follows the mouse
    v, done = frame(ui, [mouse(pygame.MOUSEBUTTONUP, (310, track_y))], lambda u: sl(u, 4))
    assert done and v == 16
    v, done = frame(ui, [kd(pygame.K_LEFT)], lambda u: sl(u, 16))  # focused after the click
    assert done and v == 15
    pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=3))
    v, done = frame(
        ui,
        [
            pygame.event.Event(pygame.MOUSEMOTION, pos=(100, track_y)),
            pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=3),
        ],
        lambda u: sl(u, 15),
    )
    assert done and v == 16  # clamped at the top
    v, _ = frame(ui, [], lambda u: sl(u, 3, clamp=lambda x: max(x, 5.0)))
    assert v == 5  # the caller's rule narrows the range


@given(t=st.floats(0, 1))
@settings(max_examples=30, deadline=None)
def test_log_slider_stays_in_range(ui, t):
    r = (10, 150, 300, 34)
    x = 10 + int(t * 300)
    y = 150 + ui.line_h + 8
    ui.active = None
    v, _ = frame(
        ui,
        [mouse(pygame.MOUSEBUTTONDOWN, (x, y))],
        lambda u: u.slider(r, "lr", 1e-3, 1e-5, 1e-1, log=True),
    )
    frame(
        ui,
        [mouse(pygame.MOUSEBUTTONUP, (x, y))],
        lambda u: u.slider(r, "lr", v, 1e-5, 1e-1, log=True),
    )
    assert 1e-5 <= v <= 1e-1


def test_overlay_swallows_clicks_beneath(ui):
    ui.focus = ui.active = None
    hits = []

    def draw(u):
        if u.button((10, 200, 100, 30), "under"):
            hits.append("under")
        u.defer("pop", lambda: u.add_layer("pop", (0, 0, 400, 300)))

    frame(ui, [], draw)  # the overlay registers its capture rectangle
    click = [mouse(pygame.MOUSEBUTTONDOWN, (50, 215)), mouse(pygame.MOUSEBUTTONUP, (50, 215))]
    frame(ui, click, draw)
    assert hits == []
    frame(ui, [], lambda u: u.button((10, 200, 100, 30), "under"))  # overlay gone
    frame(ui, click, lambda u: hits.append(u.button((10, 200, 100, 30), "under")))
    assert hits == [True]


def test_disabled_button_does_not_click(ui):
    ui.focus = ui.active = None
    click = [mouse(pygame.MOUSEBUTTONDOWN, (50, 215)), mouse(pygame.MOUSEBUTTONUP, (50, 215))]
    assert not frame(ui, click, lambda u: u.button((10, 200, 100, 30), "off", enabled=False))


def test_wrap_and_elide(ui):
    lines = ui.wrap("one two three four five six seven eight nine ten", 80)
    assert all(ui.text_size(line)[0] <= 80 for line in lines)
    assert " ".join(lines) == "one two three four five six seven eight nine ten"
    assert ui.text_size(ui.elide("x" * 200, 60))[0] <= 60
    assert ui.render("héllo ✓ 日本", (255, 255, 255)).get_width() > 0  # UTF-8 text renders
    for odd in ("\x00", "\xad", "\ud800", "a\u200bb"):  # never raises, whatever the text
        ui.render(odd, (255, 255, 255))
        ui.text_size(odd)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60), st.integers(0, 300))
def test_measured_and_shortened_texts_are_remembered_exactly(ui, s, width):
    """text_size and elide keep what they worked out; what they remember is what they would
    work out again (the font's own measure; the longest prefix with "…" that fits)."""
    from app.ui import _printable

    first = ui.elide(s, width)
    assert ui.text_size(s) == ui.font.size(_printable(s))
    assert ui.elide(s, width) == first  # the second time from the cache
    if first != s:
        assert first.endswith("…") and s.startswith(first[:-1])
        assert ui.font.size(_printable(first))[0] <= width or len(first) == 1
        longer = s[: len(first)] + "…"  # one character more no longer fits
        assert len(first) > len(s) or ui.font.size(_printable(longer))[0] > width


def test_behaviour_hot_active_click_and_dragging(ui):
    r = (10, 10, 50, 20)
    out = frame(ui, [mouse(pygame.MOUSEBUTTONDOWN, (20, 15))], lambda u: u.behaviour("w", r))
    assert out.over and out.pressed and out.active and not out.clicked
    assert frame(ui, [], lambda u: u.dragging("w"))  # held down across frames
    out = frame(ui, [mouse(pygame.MOUSEBUTTONUP, (20, 15))], lambda u: u.behaviour("w", r))
    assert out.clicked and ui.active is None
    # pressed inside, released outside: not a click
    frame(ui, [mouse(pygame.MOUSEBUTTONDOWN, (20, 15))], lambda u: u.behaviour("w", r))
    out = frame(ui, [mouse(pygame.MOUSEBUTTONUP, (200, 200))], lambda u: u.behaviour("w", r))
    assert not out.clicked
    # disabled: nothing, and it is still recorded where it was drawn
    out = frame(
        ui, [mouse(pygame.MOUSEBUTTONDOWN, (20, 15))], lambda u: u.behaviour("w", r, enabled=False)
    )
    assert not (out.over or out.pressed) and ui.drawn["w"] == pygame.Rect(r)


def test_row_selects_on_press_and_reports_a_double_click(ui):
    r = (10, 10, 100, 20)
    frame(ui, [mouse(pygame.MOUSEBUTTONUP, (0, 0))])
    first = frame(ui, [mouse(pygame.MOUSEBUTTONDOWN, (30, 15))], lambda u: u.row(r, "item"))
    frame(ui, [mouse(pygame.MOUSEBUTTONUP, (30, 15))])
    second = frame(ui, [mouse(pygame.MOUSEBUTTONDOWN, (30, 15))], lambda u: u.row(r, "item"))
    frame(ui, [mouse(pygame.MOUSEBUTTONUP, (30, 15))])
    assert first.pressed and not first.double
    assert second.pressed and second.double


def test_slider_snaps_to_its_values_and_steps_between_them(ui):
    snaps = (1, 2, 4, 8, 16)
    track_y = 10 + ui.line_h + 2 + 6

    def slider(u, v=4.0):
        return u.slider((10, 10, 300, 34), "B", v, 1, 16, integer=True, snaps=snaps, key="b")

    frame(ui, [mouse(pygame.MOUSEBUTTONUP, (0, 0))])
    frame(ui, [mouse(pygame.MOUSEBUTTONDOWN, (10 + 300 * 6 // 15, track_y))], slider)
    v, done = frame(ui, [mouse(pygame.MOUSEBUTTONUP, (10 + 300 * 6 // 15, track_y))], slider)
    assert done and v in snaps and v == 8  # 7 is nearer 8 than 4
    v, done = frame(ui, [kd(pygame.K_RIGHT)], lambda u: slider(u, 8.0))
    assert (v, done) == (16.0, True)
    v, _ = frame(ui, [kd(pygame.K_LEFT)], lambda u: slider(u, 5.0))  # between snaps: to 4
    assert v == 4.0


def test_a_scrolled_region_fades_the_edges_its_content_continues_past(ui):
    """With ``fade``, an edge with more content past it blends into the background (opaque at
    the edge): a row cut there reads as "more below". At the end of the range the bottom edge is
    the content's own, and the top fades instead."""
    bg, content = (40, 40, 50), (255, 255, 255)
    r = pygame.Rect(10, 10, 200, 120)

    def draw(u):
        u.surface.fill(content, r)
        return u.scroll(r, "fade-test", 400, fade=bg)

    def px(y):
        return tuple(ui.surface.get_at((r.x + 50, y)))[:3]

    assert frame(ui, fn=draw) == 0
    assert px(r.bottom - 1) == bg and px(r.y) == content  # more below only
    assert px(r.centery) == content and px(r.bottom - UI.FADE_H // 2) not in (bg, content)
    wheel = pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=-100, flipped=False, precise_x=0.0,
                               precise_y=-100.0)  # fmt: skip
    pygame.mouse.set_pos(r.center)
    frame(ui, [pygame.event.Event(pygame.MOUSEMOTION, pos=r.center, rel=(0, 0), buttons=(0, 0, 0))])
    off = frame(ui, [wheel], draw)
    assert off == 400 - r.h  # scrolled to the end
    assert px(r.y) == bg and px(r.bottom - 1) == content
