"""The LLM tab driven through the real event loop: chat, Stop, sliders, conversations, Compare."""

from __future__ import annotations

import json
import time

import pygame
import pytest

from app import selector
from app.tabs import llm as tab_llm

from .conftest import click, drag, frames_until, move, press, rect_of, settle, type_text


@pytest.fixture
def llm(studio):
    press(studio, "tab:LLM")
    frames_until(studio, lambda: tab_llm.ready(studio.st))
    return studio


@pytest.fixture
def calls(monkeypatch):
    """Record what each reply was asked (the model, the last user message as "prompt", the
    context messages and the sampling), and slow it down so a reply can be stopped."""
    seen: list[dict] = []
    real = tab_llm.reply_stream

    def reply_stream(lm, msgs, params, stop):
        seen.append({"model": lm.name, "prompt": msgs[-1]["content"], "messages": msgs, **params})
        dropped, pieces = real(lm, msgs, params, stop)

        def slow():
            for piece in pieces:
                time.sleep(0.002)
                yield piece

        return dropped, slow()

    monkeypatch.setattr(tab_llm, "reply_stream", reply_stream)
    return seen


def messages(studio):
    return tab_llm.conversation(studio.st)["messages"]


def chat(studio, prompt: str) -> None:
    press(studio, "llm/chat-input")
    type_text(studio, prompt)
    press(studio, "llm/send")


def test_layout_matches_spec(llm):
    tab_llm.set_input(llm.st, "x")  # Send is enabled (green) once there is a prompt
    llm.pump(1)
    assert rect_of(llm, "llm/chat-input") == pygame.Rect(10, 810, 1150, 80)
    assert rect_of(llm, "llm/send") == pygame.Rect(1170, 810, 90, 80)
    assert rect_of(llm, "llm/selector:model") == pygame.Rect(1290, 90, 300, 30)
    assert llm.ui.surface.get_at((20, 80))[:3] == (25, 25, 35)  # the chat area's background
    assert llm.ui.surface.get_at((1180, 880))[:3] == (80, 150, 80)  # Send is green


def test_chat_streams_into_a_model_bubble_and_stop_stops_it(llm, calls):
    st = llm.st
    # greedy, so the reply is the same every run (sampling could draw end-of-text at once)
    tab_llm.state(st)["params"].update(max_tokens=2048, temperature=0.0)
    chat(llm, "Hello, wörld")
    user, reply = messages(llm)[-2:]
    assert user == {"role": "user", "text": "Hello, wörld"}
    assert reply["role"] == "model" and reply["model"] == "alpha"
    assert calls[-1]["prompt"] == "Hello, wörld" and calls[-1]["max_tokens"] == 2048
    frames_until(llm, lambda: len(reply["text"]) > 0 or not tab_llm.writing(st))
    assert reply["state"] == "writing", reply.get("error")  # it streams while the loop runs
    llm.step()
    r, g, _ = llm.ui.surface.get_at((1180, 880))[:3]
    assert r > 2 * g  # Send became a red Stop
    press(llm, "llm/send")  # Stop
    frames_until(llm, lambda: not tab_llm.writing(st))
    assert reply["state"] == "stopped"
    assert 0 < len(reply["text"]) < 2048
    # the input is empty and keeps the keys: the next prompt can be typed at once
    assert tab_llm.state(st)["input"] == ""
    type_text(llm, "again")
    assert tab_llm.state(st)["input"] == "again"


def test_enter_sends_and_reply_finishes(llm, calls):
    tab_llm.state(llm.st)["params"].update(max_tokens=12, temperature=0.0)
    press(llm, "llm/chat-input")
    type_text(llm, "abc")
    pygame.event.post(
        pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RETURN, mod=0, unicode="\r", scancode=0)
    )
    llm.step()
    frames_until(llm, lambda: not tab_llm.writing(llm.st))
    reply = messages(llm)[-1]
    assert reply["state"] == "done" and reply["text"]
    assert len(calls) == 1 and calls[0]["prompt"] == "abc"


def test_sliders_set_the_values_passed_to_generate(llm, calls):
    def slider(label):
        return rect_of(llm, f"llm/sl:{label}")

    for label in ("Temperature", "Top-K"):  # to the far left: 0 (greedy; top-k off)
        r = slider(label)
        drag(llm, (r.x + r.w // 2, r.bottom - 6), (r.x - 50, r.bottom - 6))
    r = slider("Top-P")
    drag(llm, (r.x + 20, r.bottom - 6), (r.right + 50, r.bottom - 6))
    r = slider("Max Tokens")
    drag(llm, (r.x + 5, r.bottom - 6), (r.x + r.w // 4, r.bottom - 6))
    p = tab_llm.state(llm.st)["params"]
    assert p["temperature"] == 0 and p["top_k"] == 0 and p["top_p"] == 1.0
    assert 400 < p["max_tokens"] < 600
    # the wheel moves a slider too
    move(llm, slider("Temperature").center)
    pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=10, flipped=False))
    llm.step()
    assert p["temperature"] == pytest.approx(0.2)
    chat(llm, "x")
    frames_until(llm, lambda: not tab_llm.writing(llm.st))
    got = calls[-1]
    assert got["temperature"] == pytest.approx(0.2)
    assert (got["top_k"], got["top_p"], got["max_tokens"]) == (0, 1.0, p["max_tokens"])


def test_conversations_are_kept_apart_and_saved(llm, calls, models_dir):
    st = llm.st
    tab_llm.state(st)["params"]["max_tokens"] = 5
    chat(llm, "first thread")
    frames_until(llm, lambda: not tab_llm.writing(st))
    press(llm, "llm/conv-new")
    assert messages(llm) == []
    chat(llm, "second thread")
    frames_until(llm, lambda: not tab_llm.writing(st))
    s = tab_llm.state(st)
    assert [c["title"] for c in s["convs"]] == ["first thread", "second thread"]
    assert [m["text"] for m in s["convs"][0]["messages"]][0] == "first thread"
    # switch back by clicking the first row of the list
    new = rect_of(llm, "llm/conv-new")  # the list sits above the buttons
    click(llm, (new.x + 40, new.y - 138 + 2 + 11))
    assert s["cur"] == 0 and messages(llm)[0]["text"] == "first thread"
    settle(llm)
    saved = json.loads((models_dir / tab_llm.CONV_FILE).read_text())
    assert [c["title"] for c in saved["conversations"]] == ["first thread", "second thread"]
    assert saved["current"] == 0
    assert not any(
        k.startswith("_") for c in saved["conversations"] for m in c["messages"] for k in m
    )
    # Clear Chat empties only the current thread
    press(llm, "llm/Clear Chat")
    assert messages(llm) == [] and len(s["convs"][1]["messages"]) == 2
    # the next start reads them back
    settle(llm)
    convs, cur, warning = tab_llm.load_conversations(models_dir / tab_llm.CONV_FILE)
    assert warning == "" and cur == 0 and convs[0]["messages"] == []
    assert convs[1]["messages"][0]["text"] == "second thread"


def test_damaged_conversations_file_is_kept_aside(tmp_path):
    path = tmp_path / tab_llm.CONV_FILE
    path.write_text("{not json")
    convs, cur, warning = tab_llm.load_conversations(path)
    assert len(convs) == 1 and cur == 0 and "unreadable" in warning
    assert (tmp_path / (tab_llm.CONV_FILE + ".bad")).read_text() == "{not json"


def test_compare_answers_with_two_models_side_by_side(llm, calls):
    st = llm.st
    tab_llm.state(st)["params"].update(max_tokens=8, temperature=0.0)
    press(llm, "llm/cb:Answer with a second model too")
    assert tab_llm.state(st)["compare"]
    assert not tab_llm.can_send(st)  # no second model yet
    press(llm, "llm/selector:compare")
    assert selector.is_open(llm.ui)
    llm.pump(1)
    box = rect_of(llm, "llm/selector:compare")
    row = box.bottom + 1 + 30 + 15  # the second row: beta
    click(llm, (box.x + 50, row))
    assert tab_llm.state(st)["other"] == "beta"
    assert st.current == "alpha"  # the second selector leaves the current model alone
    chat(llm, "same prompt")
    a, b = messages(llm)[-2:]
    assert (a["model"], a["col"], b["model"], b["col"]) == ("alpha", 0, "beta", 1)
    frames_until(llm, lambda: not tab_llm.writing(st))
    assert a["text"] and b["text"] and a["state"] == b["state"] == "done"
    assert sorted(c["model"] for c in calls) == ["alpha", "beta"]


def test_long_utf8_text_wraps_on_words(llm):
    words = "Grüße aus Köln, 東京 und Zürich " * 30
    msg = {"role": "user", "text": words}
    lines, _, widest = tab_llm._wrapped(llm.ui, msg, 300)
    assert len(lines) > 5
    assert all(llm.ui.text_size(line)[0] <= widest <= 300 for line in lines)
    assert " ".join(lines).split() == words.split()


def test_wrapping_keeps_indentation_and_drops_control_characters(llm):
    msg = {"role": "model", "text": "def f():\n    return 1\x12\x00\n\tpass", "state": "done"}
    lines, _, _ = tab_llm._wrapped(llm.ui, msg, 400)
    assert lines == ["def f():", "    return 1", "    pass"]


def test_the_conversation_is_the_context_and_regenerate_and_copy(llm, calls):
    st = llm.st
    s = tab_llm.state(st)
    s["params"].update(max_tokens=6, temperature=0.0)
    chat(llm, "first question")
    frames_until(llm, lambda: not tab_llm.writing(st))
    first_reply = messages(llm)[-1]["text"]
    chat(llm, "second question")
    frames_until(llm, lambda: not tab_llm.writing(st))
    ctx = calls[-1]["messages"]
    assert [m["role"] for m in ctx] == ["user", "assistant", "user"][: len(ctx)]
    assert ctx[0]["content"] == "first question" and ctx[-1]["content"] == "second question"
    if first_reply.strip():  # an empty reply is left out of the context
        assert ctx[1]["content"] == first_reply
    n = len(messages(llm))
    press(llm, "llm/regenerate")
    frames_until(llm, lambda: not tab_llm.writing(st))
    assert len(messages(llm)) == n  # the last reply replaced, not added to
    assert calls[-1]["messages"] == calls[-2]["messages"]
    assert messages(llm)[-1]["state"] == "done"
    press(llm, "llm/copy")
    assert llm.ui.get_clipboard() == messages(llm)[-1]["text"]


def test_presets_and_the_new_sliders_reach_the_reply(llm, calls):
    press(llm, "llm/preset:Precise")
    p = tab_llm.state(llm.st)["params"]
    assert p["temperature"] == 0.3 and p["repetition_penalty"] == 1.15
    r = rect_of(llm, "llm/sl:Seed")
    drag(llm, (r.x + 2, r.bottom - 6), (r.x + r.w // 2, r.bottom - 6))
    assert 400 < p["seed"] < 600
    p["max_tokens"] = 4
    chat(llm, "x")
    frames_until(llm, lambda: not tab_llm.writing(llm.st))
    got = calls[-1]
    assert (got["temperature"], got["repetition_penalty"], got["seed"]) == (0.3, 1.15, p["seed"])


def test_old_turns_left_out_are_shown(llm):
    msg = {"role": "model", "model": "alpha", "text": "hi", "state": "done", "dropped": 3}
    tab_llm.conversation(llm.st)["messages"][:] = [{"role": "user", "text": "q"}, msg]
    llm.pump(2)  # drawn with the note in its header (no error)
    assert tab_llm.context_messages([*tab_llm.conversation(llm.st)["messages"]], None)[1] == {
        "role": "assistant",
        "content": "hi",
    }


def test_the_server_starts_and_stops_from_the_tab(llm):
    pytest.importorskip("fastapi")
    openai = pytest.importorskip("openai")
    s = tab_llm.state(llm.st)
    s["server_port"] = 0  # a free port
    press(llm, "llm/server")
    frames_until(llm, lambda: s.get("server") is not None, timeout=60)
    srv = s["server"]
    assert srv.running and srv.url.startswith("http://127.0.0.1:")
    client = openai.OpenAI(base_url=srv.url, api_key="none", max_retries=0)
    assert "alpha" in [m.id for m in client.models.list()]
    assert srv.requests == 0  # a listing is not a generation request
    client.completions.create(model="alpha", prompt="a", max_tokens=2)
    assert srv.requests == 1
    llm.pump(1)
    press(llm, "llm/server")  # Stop
    settle(llm)
    assert s["server"] is None and not srv.running
