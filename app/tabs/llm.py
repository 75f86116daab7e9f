"""LLM tab: chat with the selected model (main area) and its generation settings, conversations and
Compare (right panel).

Replies are written by a thread each (`Reply`) that streams a chat reply (cllm.engine.chat: the
conversation so far is the context, in its turn format, oldest turns left out when the window is
full; the reply stops at the next user turn) into a locked buffer; the UI thread moves them into
the message once per frame, so the window never waits on the model. The current model is the one
the framework loaded (`st.lm`); a model in training, and the Compare model, are chatted with
through a copy loaded from its last checkpoint on disk, never the trainer's own. The SERVER row
starts and stops `cllm serve`'s OpenAI-compatible API (cllm.serve) inside the studio.
Conversations live in memory and in `<models_dir>/.conversations.json`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pygame

from cllm.atomic import write_atomic
from cllm.engine.config import format_count

from .. import theme as th
from ..selector import model_selector, panel_selector
from ..state import AppState
from ..tabstate import LLMState
from ..ui import UI

CONV_FILE = ".conversations.json"
NEW_TITLE = "New conversation"
DEFAULTS = {
    "temperature": 0.8,
    "max_tokens": 200,
    "top_k": 50,
    "top_p": 0.9,
    "repetition_penalty": 1.1,
    "seed": 0,  # 0: a new draw each time
}
PRESET_BUTTONS = ("Precise", "Balanced", "Creative")  # cllm.engine.chat.PRESETS
PANEL_CONTENT_H = 824  # the panel's content; shorter windows scroll it
SLIDER_H = 34
PAD = 10  # inside a bubble
GAP = 12  # between bubbles
RUN_STATES = ("running", "paused")
# control characters (an untrained model writes them) would show as boxes: drop all but newline
_CONTROLS = {c: None for c in [*range(32), 127] if c != 10}


# ---------------------------------------------------------------------------- replies
def reply_stream(
    lm: Any,
    messages: list[dict],
    params: dict,
    stop: threading.Event,
    on_token: Callable[[int], None] | None = None,
):
    """(the context, with ``dropped`` and ``ids``; the reply's text pieces) for the conversation
    so far; ``on_token`` is called with each token sampled."""
    from cllm.engine.chat import Sampling, chat

    seed = params.get("seed") or None
    sampling = Sampling(**{**params, "seed": seed})
    ctx, gen = chat(lm.gpt, lm.tokenizer, messages, sampling, stop, on_token)
    return ctx, iter(gen)


class Reply:
    """One model's answer, written by its own thread; poll() hands the new text to the UI."""

    def __init__(
        self, load: Callable[[], Any], messages: list[dict], params: dict, msg: dict
    ) -> None:
        self.msg = msg  # the message it fills; touched on the UI thread only
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self._error: BaseException | None = None
        self._stats: dict | None = None
        self._done = False
        self._dropped = 0
        self._thread = threading.Thread(
            target=self._run, args=(load, messages, params), name="chat-reply", daemon=True
        )
        self._thread.start()

    def _run(self, load: Callable[[], Any], messages: list[dict], params: dict) -> None:
        t0 = time.perf_counter()  # from Send: loading a copy is part of the wait
        first: float | None = None
        tokens = 0

        def on_token(tok: int) -> None:
            nonlocal first, tokens
            if first is None:
                first = time.perf_counter()
            tokens += 1

        try:
            lm = load()
            ctx, pieces = reply_stream(lm, messages, params, self.stop, on_token)
            self._dropped = ctx.dropped
            for piece in pieces:
                with self._lock:
                    self._pieces.append(piece)
            stats = reply_stats(lm, len(ctx.ids), tokens, t0, first, time.perf_counter())
            with self._lock:
                self._stats = stats
        except Exception as err:  # shown in the bubble and as a toast, never lost
            with self._lock:
                self._error = err
        finally:
            with self._lock:
                self._done = True

    def poll(self) -> BaseException | bool:
        """Move new text into the message (UI thread); True or the error once finished."""
        with self._lock:
            pieces, self._pieces = self._pieces, []
            done, err, stats = self._done, self._error, self._stats
        if pieces:
            self.msg["text"] += "".join(pieces)
        if self._dropped:
            self.msg["dropped"] = self._dropped  # shown on the bubble: the context was full
        if stats is not None:
            self.msg["stats"] = stats
        if not done:
            return False
        if err is not None:
            self.msg["state"], self.msg["error"] = "error", _message(err)
            return err
        self.msg["state"] = "stopped" if self.stop.is_set() else "done"
        return True


def reply_stats(
    lm: Any, n_prompt: int, n_reply: int, t0: float, first: float | None, t1: float
) -> dict:
    """Measured figures of one reply: the tokens sampled, tokens per second of writing (after
    the first), seconds from Send to the first token, and how much of the model's context the
    prompt and reply fill."""
    writing = t1 - first if first is not None else 0.0
    return {
        "tokens": n_reply,
        "tok_s": round((n_reply - 1) / writing, 1) if writing > 0 and n_reply > 1 else None,
        "first_s": round(first - t0, 3) if first is not None else None,
        "seconds": round(t1 - t0, 3),
        "context_used": min(n_prompt + n_reply, int(lm.config.block_size)),
        "context": int(lm.config.block_size),
    }


def stats_line(stats: dict) -> str:
    parts = [f"{stats['tokens']:,} token{'s' * (stats['tokens'] != 1)}"]
    if stats.get("tok_s"):
        parts.append(f"{stats['tok_s']:,.1f} tok/s")
    if stats.get("first_s") is not None:
        parts.append(f"first token {stats['first_s']:.2f} s")
    used, ctx = stats.get("context_used", 0), stats.get("context", 0)
    if ctx:
        parts.append(f"context {used:,} / {ctx:,} ({100 * used / ctx:.0f}%)")
    return " · ".join(parts)


def _message(err: BaseException) -> str:
    from cllm.errors import CLLMError

    return str(err) if isinstance(err, CLLMError) else f"{type(err).__name__}: {err}"


class ChatCopies:
    """Models loaded from disk for chatting (one in training, the Compare model), apart from the
    app's current model and the trainer's; reloaded when the file on disk changes."""

    def __init__(self, registry: Any, keep: int = 2) -> None:
        self.registry, self.keep = registry, keep
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int | None, Any]] = {}

    def get(self, name: str) -> Any:
        """Runs in a reply thread."""
        try:
            stamp = os.stat(self.registry.path(name)).st_mtime_ns
        except OSError:  # gone: load() below says so in the registry's words
            stamp = None
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        lm = self.registry.load(name)
        with self._lock:
            self._cache.pop(name, None)
            self._cache[name] = (stamp, lm)
            while len(self._cache) > self.keep:
                self._cache.pop(next(iter(self._cache)))
        return lm


# ---------------------------------------------------------------------------- conversations
def conv_path(st: AppState) -> Path:
    return Path(st.models_dir) / CONV_FILE


def new_conversation(title: str = NEW_TITLE) -> dict:
    return {"title": title, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "messages": []}


def load_conversations(path: Path) -> tuple[list[dict], int, str]:
    """(conversations, current index, warning). A damaged file is moved aside, never lost."""
    if not path.exists():
        return [new_conversation()], 0, ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        convs = [_clean_conv(c) for c in data["conversations"]]
        cur = int(data.get("current", 0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        bad = path.with_name(path.name + ".bad")
        try:
            os.replace(path, bad)
        except OSError:
            pass
        return [new_conversation()], 0, f"conversations file unreadable ({err}); kept as {bad.name}"
    if not convs:
        convs = [new_conversation()]
    return convs, min(max(cur, 0), len(convs) - 1), ""


def _clean_conv(c: dict) -> dict:
    msgs = []
    for m in c["messages"]:
        if m.get("role") not in ("user", "model") or not isinstance(m.get("text"), str):
            raise ValueError("a message without a role or text")
        m = dict(m)
        if m.get("state") == "writing":  # the app ended while it was written
            m["state"] = "stopped"
        msgs.append(m)
    return {
        "title": str(c.get("title") or NEW_TITLE),
        "created": c.get("created", ""),
        "messages": msgs,
    }


def _dump(s: LLMState) -> str:
    convs = [
        {
            **c,
            "messages": [
                {k: v for k, v in m.items() if not k.startswith("_")} for m in c["messages"]
            ],
        }
        for c in s.convs
    ]
    return json.dumps(
        {"version": 1, "current": s.cur, "conversations": convs}, ensure_ascii=False, indent=1
    )


def save(st: AppState) -> None:
    s = state(st)
    if s.convs is not None:
        st.worker.submit(write_atomic, conv_path(st), _dump(s), error=st.fail)


# ---------------------------------------------------------------------------- tab state
def state(st: AppState) -> LLMState:
    s = st.tab("llm")
    if s.copies is None:  # first use: the defaults are in LLMState
        s.params, s.copies = dict(DEFAULTS), ChatCopies(st.registry)

        def loaded(r: tuple) -> None:
            s.convs, s.cur, warning = r
            if warning:
                st.say(warning, "warning")

        st.worker.submit(load_conversations, conv_path(st), done=loaded, error=st.fail)
    return s


def ready(st: AppState) -> bool:
    return state(st).convs is not None


def conversation(st: AppState) -> dict:
    s = state(st)
    return s.convs[s.cur]


def writing(st: AppState) -> bool:
    return bool(state(st).replies)


def training(st: AppState, name: str | None) -> bool:
    """The model is being trained (here or by a headless run), so its weights are changing."""
    if name is None:
        return False
    if st.trainer_name == name:
        return True
    remote = st.remote if name == st.current else None
    return getattr(remote, "state", None) in RUN_STATES


def can_send(st: AppState) -> bool:
    s = state(st)
    if s.convs is None or s.replies or not s.input.strip() or not st.current:
        return False
    if s.compare and not s.other:
        return False
    return training(st, st.current) or (st.lm_name == st.current and st.lm is not None)


def set_input(st: AppState, text: str) -> None:
    state(st).input = text


def send(st: AppState) -> bool:
    """Ask the current model (and the Compare model) to continue the input; False if not now."""
    if not can_send(st):
        return False
    s = state(st)
    prompt = s.input
    conv = conversation(st)
    if conv["title"] == NEW_TITLE:
        conv["title"] = " ".join(prompt.split())[:60]
    conv["messages"].append({"role": "user", "text": prompt})
    _ask(st, s, conv)
    s.input = ""
    return True


def _ask(st: AppState, s: LLMState, conv: dict) -> None:
    """Start the replies to the conversation as it stands (it ends with the user's message)."""
    params = generation_params(s)
    names = [st.current] + ([s.other] if s.compare else [])
    for col, name in enumerate(names):
        context = context_messages(conv["messages"], col if s.compare else None)
        msg = {"role": "model", "model": name, "text": "", "state": "writing"}
        if s.compare:
            msg["col"] = col
        conv["messages"].append(msg)
        s.replies.append(Reply(_loader(st, s, name, own=col == 0), context, params, msg))


def context_messages(msgs: list[dict], col: int | None) -> list[dict]:
    """The conversation as one model saw it: the user's messages and that model's column of
    replies (a Compare's other column left out), failed and empty replies skipped."""
    out = []
    for m in msgs:
        if m["role"] == "model":
            if m.get("state") == "error" or not m["text"].strip():
                continue
            if m.get("col") is not None and m.get("col") != (col or 0):
                continue
        out.append({"role": "user" if m["role"] == "user" else "assistant", "content": m["text"]})
    return out


def can_regenerate(st: AppState) -> bool:
    s = state(st)
    if s.convs is None or s.replies or not st.current:
        return False
    msgs = conversation(st)["messages"]
    if not msgs or msgs[-1]["role"] != "model" or (s.compare and not s.other):
        return False
    return training(st, st.current) or (st.lm_name == st.current and st.lm is not None)


def regenerate(st: AppState) -> bool:
    """Write the last reply (or the Compare pair) again; False if not now."""
    if not can_regenerate(st):
        return False
    s = state(st)
    conv = conversation(st)
    while conv["messages"] and conv["messages"][-1]["role"] == "model":
        conv["messages"].pop()
    _ask(st, s, conv)
    return True


def last_reply(st: AppState) -> str | None:
    s = state(st)
    if s.convs is None:
        return None
    for m in reversed(conversation(st)["messages"]):
        if m["role"] == "model" and m.get("state") != "writing":
            return m["text"]
    return None


def _loader(st: AppState, s: LLMState, name: str, own: bool) -> Callable[[], Any]:
    lm = st.lm
    if own and st.lm_name == name and lm is not None and not training(st, name):
        return lambda: lm  # the app's loaded model: nothing else mutates it
    copies = s.copies
    return lambda: copies.get(name)


def stop(st: AppState) -> None:
    for r in state(st).replies:
        r.stop.set()


def generation_params(s: LLMState) -> dict:
    p = s.params
    return {
        "temperature": round(float(p["temperature"]), 3),
        "max_tokens": int(p["max_tokens"]),
        "top_k": int(p["top_k"]),
        "top_p": max(0.01, round(float(p["top_p"]), 3)),  # 0 would leave no token to draw
        "repetition_penalty": round(float(p.get("repetition_penalty", 1.0)), 3),
        "seed": int(p.get("seed", 0)),
    }


def apply_preset(s: dict, name: str) -> None:
    from cllm.engine.chat import PRESETS

    s.params.update(PRESETS[name.lower()])


def use_conversation(st: AppState, title: str) -> None:
    """Switch to the conversation titled `title`, creating it if there is none (the kiosk's)."""
    s = state(st)
    titles = [c["title"] for c in s.convs]
    if title in titles:
        s.cur = titles.index(title)
    else:
        s.convs.append(new_conversation(title))
        s.cur = len(s.convs) - 1
        save(st)


def clear_chat(st: AppState) -> None:
    stop(st)
    conversation(st)["messages"].clear()
    save(st)


def _poll(st: AppState, s: LLMState) -> None:
    finished = False
    for r in list(s.replies):
        res = r.poll()
        if res is False:
            continue
        s.replies.remove(r)
        finished = True
        if isinstance(res, BaseException):
            st.fail(res)
    if finished and not s.replies:
        save(st)


# ---------------------------------------------------------------------------- drawing
def draw(ui: UI, st: AppState, main: pygame.Rect, panel: pygame.Rect) -> None:
    s = state(st)
    _poll(st, s)
    with ui.scope("llm"):
        chat = pygame.Rect(main.x + 10, main.y + 10, main.w - 20, main.h - 100)
        chat_view(ui, st, s, chat)
        input_row(ui, st, s, pygame.Rect(chat.x, chat.bottom, chat.w, 80))
        control_panel(ui, st, s, panel)


def chat_view(ui: UI, st: AppState, s: LLMState, chat: pygame.Rect) -> None:
    ui.rect(chat, th.CHAT_BG)
    if s.convs is None:
        ui.text_center(chat, "Loading conversations...", th.HINT)
        return
    msgs = conversation(st)["messages"]
    if not msgs:
        _hint(ui, st, s, chat)
        return
    rows = _layout(ui, msgs, chat.w - 30)
    content_h = sum(h for h, _ in rows) + GAP * (len(rows) + 1)
    off = ui.scroll(chat, "chat", content_h, stick_bottom=True)
    y = chat.y + GAP - off + max(0, chat.h - content_h)  # short chats sit at the bottom
    with ui.clip(chat):
        for h, row in rows:
            if y + h >= chat.y and y <= chat.bottom:
                _draw_row(ui, chat, y, row)
            y += h + GAP


def _hint(ui: UI, st: AppState, s: LLMState, chat: pygame.Rect) -> None:
    if not st.current:
        lines = ["No model selected.", "Choose one in the panel, or create one in the Models tab."]
    else:
        lines = [
            f"Chat with {st.current}: type a prompt below and press Enter or Send.",
            "The conversation so far is its context; the reply streams in as it is written.",
        ]
        if s.compare:
            lines.append("Compare is on: both models answer the same prompt side by side.")
    y = chat.centery - len(lines) * ui.line_h // 2
    for i, line in enumerate(lines):
        ui.label((chat.centerx, y + i * (ui.line_h + 4)), line, th.HINT, align="center")


def _wrapped(ui: UI, msg: dict, width: int) -> tuple[list[str], int, int]:
    """The message's lines at this width, where its error lines start and the widest line's
    width, cached until its text or the width changes."""
    key = (len(msg["text"]), msg.get("state"), width, bool(msg.get("stats")))
    cache = msg.get("_wrap")
    if cache is None or cache[0] != key:
        text = msg["text"].replace("\t", "    ").translate(_CONTROLS)
        if not text and msg.get("state") == "writing":
            text = "…"
        elif text and not text.strip():  # only whitespace: show it, never an empty bubble
            text = "(only whitespace) " + visible_whitespace(msg["text"])
        lines = _wrap_keep_indent(ui, text, width) if text else []
        err_from = len(lines)
        if msg.get("state") == "error":
            lines += ui.wrap("[error] " + msg.get("error", ""), width)
        text_w = max((ui.text_size(line)[0] for line in lines), default=0)
        stats = msg.get("stats")
        msg["_stats"] = ui.wrap(stats_line(stats), width) if stats else []  # wrapped, not cut
        cache = msg["_wrap"] = (key, lines, err_from, text_w)
    return cache[1], cache[2], cache[3]


def visible_whitespace(text: str) -> str:
    """Spaces, tabs and line breaks as marks: '·', '→' and '⏎'."""
    return text.replace(" ", "·").replace("\t", "→").replace("\r", "").replace("\n", "⏎")


def _wrap_keep_indent(ui: UI, text: str, width: int) -> list[str]:
    """Word wrap that keeps each line's leading spaces (models write code)."""
    lines: list[str] = []
    space = ui.text_size(" ")[0]
    for para in text.split("\n"):
        body = para.lstrip(" ")
        indent = min(len(para) - len(body), width // (2 * max(1, space)))
        lines += [" " * indent + part for part in ui.wrap(body, width - indent * space)]
    return lines


def _bubble_h(ui: UI, lines: list[str]) -> int:
    return PAD * 2 + ui.line_h + 4 + len(lines) * ui.line_h


def _cell_h(ui: UI, msg: dict, lines: list[str]) -> int:
    """A bubble's height: its lines, and the statistics line of a finished reply."""
    return _bubble_h(ui, lines) + (
        ui.line_h * len(msg.get("_stats", ())) + 2 if msg.get("stats") else 0
    )


def _layout(ui: UI, msgs: list[dict], width: int) -> list[tuple[int, list]]:
    """Rows of bubbles: one message, or the two answers of a Compare side by side."""
    rows: list[tuple[int, list]] = []
    half = (width - GAP) // 2
    i = 0
    while i < len(msgs):
        m = msgs[i]
        pair = (
            m["role"] == "model"
            and m.get("col") == 0
            and i + 1 < len(msgs)
            and msgs[i + 1].get("col") == 1
        )
        if pair:
            cells = [(msgs[i + k], *_wrapped(ui, msgs[i + k], half - 2 * PAD), k) for k in (0, 1)]
            i += 2
        else:
            cells = [(m, *_wrapped(ui, m, int(width * 0.72) - 2 * PAD), None)]
            i += 1
        rows.append((max(_cell_h(ui, c[0], c[1]) for c in cells), cells))
    return rows


def _draw_row(ui: UI, chat: pygame.Rect, y: int, cells: list) -> None:
    width = chat.w - 30
    half = (width - GAP) // 2
    for msg, lines, err_from, text_w, col in cells:
        user = msg["role"] == "user"
        who = "You" if user else msg.get("model", "model")
        if msg.get("dropped"):
            who += f"  · {msg['dropped']} earlier message(s) left out"
        state = msg.get("state")
        if state == "writing":
            who += "  · writing…"
        elif state == "stopped":
            who += "  · stopped"
        if col is None:
            w = min(int(width * 0.72), max(text_w, ui.text_size(who)[0]) + 2 * PAD)
            x = chat.right - 18 - w if user else chat.x + 10
        else:
            w = half
            x = chat.x + 10 + col * (half + GAP)
        stats = msg.get("_stats") if msg.get("stats") else None
        if stats and col is None:
            stats_w = max(ui.text_size(line)[0] for line in stats)
            w = max(w, min(int(width * 0.72), stats_w + 2 * PAD))
        h = _cell_h(ui, msg, lines)
        ui.rect((x, y, w, h), th.USER_BUBBLE if user else th.MODEL_BUBBLE)
        for i, line in enumerate(stats or ()):
            sy = y + h - PAD - ui.line_h * (len(stats) - i)
            ui.label((x + PAD, sy), line, th.HINT, max_w=w - 2 * PAD)
        ui.label((x + PAD, y + PAD), who, th.WHITE if user else th.ACCENT, max_w=w - 2 * PAD)
        ty = y + PAD + ui.line_h + 4
        for k, line in enumerate(lines):
            if line and chat.y - ui.line_h <= ty <= chat.bottom:
                ui.label((x + PAD, ty), line, th.ERROR if k >= err_from else th.TEXT)
            ty += ui.line_h


def input_row(ui: UI, st: AppState, s: LLMState, r: pygame.Rect) -> None:
    box = pygame.Rect(r.x, r.y, r.w - 110, r.h)
    busy = bool(s.replies)
    res = ui.text_input(box, "chat-input", s.input, placeholder="Type a prompt...")
    s.input = res.text
    refocus = res.submitted and send(st)
    send_r = pygame.Rect(box.right + 10, r.y, 90, r.h)
    if busy:
        if ui.button(
            send_r, "Stop", key="send", fill=th.TRAIN_RUNNING, text=th.WHITE, border=th.WHITE
        ):
            stop(st)
            refocus = True
    elif ui.button(
        send_r,
        "Send",
        key="send",
        enabled=can_send(st),
        fill=th.SEND,
        text=th.WHITE,
        border=th.WHITE,
    ):
        refocus = send(st)
    if refocus:  # keep typing: the field keeps the keys (and is empty after a send)
        wid = ui.id("chat-input")
        ui.state.get(wid, {}).pop("buf", None)
        ui.focus = wid


# ---------------------------------------------------------------------------- right panel
def control_panel(ui: UI, st: AppState, s: LLMState, panel: pygame.Rect) -> None:
    scrolling = panel.h < PANEL_CONTENT_H
    off = ui.scroll_offset("llm-panel") if scrolling else 0
    x, w = panel.x + 10, panel.w - 20 - (10 if scrolling else 0)
    with ui.clip(panel):
        y = panel.y - off
        panel_selector(ui, st, pygame.Rect(panel.x, y, w + 20, panel.h))
        y = status(ui, st, s, x, y + 72, w)
        y = sliders(ui, s, x, y, w)
        y = reply_buttons(ui, st, s, x, y, w)
        y = conversations(ui, st, s, x, y, w)
        y = compare(ui, st, s, x, y, w)
        server_panel(ui, st, s, x, y + 6, w)
    if scrolling:
        ui.scroll(panel, "llm-panel", PANEL_CONTENT_H, fade=th.PANEL)


def status(ui: UI, st: AppState, s: LLMState, x: int, y: int, w: int) -> int:
    ui.section((x, y), "STATUS")
    if not st.current:
        text, color = "Model: Not Loaded", th.ERROR
    elif training(st, st.current):
        text, color = "Model: Training (chat: last checkpoint)", th.WARNING
    elif st.lm_name == st.current:
        text, color = "Model: Loaded", th.SUCCESS
    elif st.loading == st.current:
        text, color = "Model: Loading...", th.WARNING
    else:
        text, color = "Model: Not Loaded", th.ERROR
    ui.label((x, y + 20), text, color, max_w=w)
    if s.replies:
        ui.label((x, y + 38), "* Writing...", th.WARNING)
    else:
        ui.label((x, y + 38), "* Ready", th.SUCCESS)
    info = st.info()
    if info is not None:
        c = info.config
        ep = f"{info.meta.epochs_trained}/{info.meta.target_epochs} ep"
        line = f"{format_count(info.n_params)} params · {ep} · context {c.block_size}"
        ui.label((x, y + 56), line, th.HINT, max_w=w)
    return y + 80


def sliders(ui: UI, s: LLMState, x: int, y: int, w: int) -> int:
    ui.section((x, y), "GENERATION")
    y += 20
    bw = (w - 16) // 3
    for i, name in enumerate(PRESET_BUTTONS):
        if ui.button((x + i * (bw + 8), y, bw, 24), name, key=f"preset:{name}"):
            apply_preset(s, name)
    y += 30
    p = s.params
    p.setdefault("repetition_penalty", DEFAULTS["repetition_penalty"])
    p.setdefault("seed", 0)
    specs = [
        ("Temperature", "temperature", 0.0, 2.0, False, "{:.2f}"),
        ("Max Tokens", "max_tokens", 1, 2048, True, "{:.0f}"),
        ("Top-K", "top_k", 0, 100, True, "off" if p["top_k"] == 0 else "{:.0f}"),
        ("Top-P", "top_p", 0.0, 1.0, False, "{:.2f}"),
    ]
    half = (w - 10) // 2
    pair = [  # two half-width sliders on one row
        ("Repeat Penalty", "repetition_penalty", 1.0, 2.0, False, "{:.2f}"),
        ("Seed", "seed", 0, 999, True, "random" if p["seed"] == 0 else "{:.0f}"),
    ]
    rects = [(x, y + k * (SLIDER_H + 8), w, SLIDER_H) for k in range(len(specs))]
    y += len(specs) * (SLIDER_H + 8)
    rects += [(x, y, half, SLIDER_H), (x + half + 10, y, half, SLIDER_H)]
    for r, (label, name, lo, hi, integer, fmt) in zip(rects, specs + pair, strict=True):
        v, _ = ui.slider(r, label, p[name], lo, hi, integer=integer, fmt=fmt)
        p[name] = int(v) if integer else v
    return y + SLIDER_H + 12


def reply_buttons(ui: UI, st: AppState, s: dict, x: int, y: int, w: int) -> int:
    bw = (w - 8) // 2
    if ui.button((x, y, bw, 26), "Regenerate", key="regenerate", enabled=can_regenerate(st)):
        regenerate(st)
    text = last_reply(st)
    if ui.button((x + bw + 8, y, bw, 26), "Copy Reply", key="copy", enabled=bool(text)):
        ui.set_clipboard(text or "")
        st.say("Reply copied to the clipboard", "success")
    return y + 36


def server_panel(ui: UI, st: AppState, s: dict, x: int, y: int, w: int) -> int:
    """The OpenAI-compatible API (cllm serve) on 127.0.0.1:8000, started and stopped here, with
    its address and the requests served."""
    srv = s.server
    starting = s.server_starting
    running = srv is not None and srv.running
    label = "Stop Server" if running else ("Starting..." if starting else "Serve API")
    if ui.button((x, y, 110, 26), label, key="server", enabled=not starting):
        if running:
            s.server = None
            st.worker.submit(srv.stop, error=st.fail)
        else:
            s.server_starting = True

            def started(server) -> None:
                s.server, s.server_starting = server, False
                st.say(f"Serving the models at {server.url}", "success")

            def failed(err: BaseException) -> None:
                s.server_starting = False
                st.fail(err)

            port = s.server_port
            st.worker.submit(start_server, st.registry, port, done=started, error=failed)
    if running:
        line, color = f"{srv.host}:{srv.port} · {srv.requests} req", th.SUCCESS
    else:
        line, color = "OpenAI API on :8000", th.DIM
    ui.label((x + 120, y + 5), line, color, max_w=w - 120)
    return y + 36


def start_server(registry: Any, port: int = 8000):
    from cllm.serve.server import Server

    return Server(registry, port=port).start()


def conversations(ui: UI, st: AppState, s: LLMState, x: int, y: int, w: int) -> int:
    ui.section((x, y), "CONVERSATIONS")
    y += 20
    convs = s.convs or []
    rows = [f"{c['title']}  ({len(c['messages'])})" for c in convs]
    i = ui.list_box(
        (x, y, w, 130), "convs", rows, s.cur if convs else None, row_h=22, empty="Loading..."
    )
    if i is not None and i != s.cur:
        s.cur = i
        save(st)
    y += 138
    bw = (w - 16) // 3
    ok = s.convs is not None
    if ui.button((x, y, bw, 28), "New", key="conv-new", enabled=ok):
        s.convs.append(new_conversation())
        s.cur = len(s.convs) - 1
        save(st)
    if ui.button(
        (x + bw + 8, y, bw, 28),
        "Clear Chat",
        enabled=ok and bool(s.convs and conversation(st)["messages"]),
    ):
        clear_chat(st)
    if ui.button(
        (x + 2 * (bw + 8), y, bw, 28), "Delete", key="conv-delete", enabled=ok and not s.replies
    ):
        del s.convs[s.cur]
        if not s.convs:
            s.convs.append(new_conversation())
        s.cur = min(s.cur, len(s.convs) - 1)
        save(st)
    return y + 44


def compare(ui: UI, st: AppState, s: LLMState, x: int, y: int, w: int) -> int:
    ui.section((x, y), "COMPARE")
    s.compare = ui.checkbox(
        (x, y + 20, w, 20), "Answer with a second model too", s.compare, enabled=not s.replies
    )
    y += 46
    if not s.compare:
        ui.label((x, y), "One prompt, two models, side by side.", th.DIM, max_w=w)
        return y + 20
    if s.other is not None and st.listed and st.info(s.other) is None:
        s.other = None  # renamed or deleted

    def choose(name: str) -> None:
        s.other = name

    model_selector(ui, st, (x, y, w, 30), key="compare", value=s.other, choose=choose)
    y += 38
    hint = "Pick the second model" if not s.other else f"{st.current or '?'} vs {s.other}"
    ui.label((x, y), hint, th.HINT, max_w=w)
    return y + 20
