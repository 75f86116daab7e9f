"""The Training tab's TRAINING DATA panel: the queue as a list of items, filter, paste (Ctrl+V),
remove and priority on the selected row, and an add's progress with Cancel."""

from __future__ import annotations

import time

import pygame

from app.tabs.queue_panel import FILTER_X
from cllm.models.registry import Registry
from tests.app.conftest import click, frames_until, key, move, press, rect_of, settle, type_text


def rows(studio) -> list[str]:
    return studio.st.tab("training").get("queue", [])


def test_paste_filter_priority_and_remove(studio, models_dir):
    studio.ui.set_clipboard("Pasted words about lattices and crystals.\n")
    key(studio, pygame.K_v, pygame.KMOD_CTRL)
    settle(studio)
    frames_until(studio, lambda: any("<pasted text>" in r for r in rows(studio)))
    with Registry(models_dir).queue("alpha") as q:
        pasted = [it for it in q.items() if it.source == "<pasted text>"]
        assert q.text(pasted[0].id) == "Pasted words about lattices and crystals.\n"
    assert any("fox.txt" in r and "text" in r and "p0" in r for r in rows(studio))

    press(studio, "training/queue-filter")
    type_text(studio, "pasted")
    key(studio, pygame.K_RETURN)
    studio.pump(1)
    box = rect_of(studio, "training/queue-filter")  # in the title row; the list starts below
    click(studio, (box.x - FILTER_X + 30, box.y + 23 + 10))  # the only row the filter leaves
    studio.pump(1)
    press(studio, "training/queue-up")
    settle(studio)
    with Registry(models_dir).queue("alpha") as q:
        assert q.item(pasted[0].id).priority == 1
    frames_until(studio, lambda: any("p1" in r for r in rows(studio)))
    studio.pump(1)
    press(studio, "training/queue-remove")
    settle(studio)
    with Registry(models_dir).queue("alpha") as q:
        assert [it.source for it in q.items()] == ["fox.txt"]


def test_an_add_can_be_cancelled(studio, tmp_path, models_dir, monkeypatch):
    from cllm.data.dataqueue import DataQueue

    real = DataQueue._file_into

    def slow(self, *args, **kwargs):  # a slow disk: the add is still going when Cancel comes
        time.sleep(0.002)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DataQueue, "_file_into", slow)
    d = tmp_path / "many"
    d.mkdir()
    for i in range(3000):
        (d / f"f{i:04d}.txt").write_text(f"file number {i} of many\n")
    studio.st.add_to_queue([str(d)], "alpha")
    frames_until(studio, lambda: (studio.st.adding or {}).get("done", 0) > 0)
    studio.pump(1)
    # the panel scrolls under its pinned ACTIONS: bring the add's progress row into view
    move(studio, rect_of(studio, "training/Add Files...").center)
    for _ in range(5):
        pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=-3, flipped=False))
        studio.step()
    press(studio, "training/Cancel")
    settle(studio)
    frames_until(studio, lambda: studio.st.adding is None or studio.st.adding.get("finished"))
    settle(studio)
    n = Registry(models_dir).info("alpha").queue_items
    assert 1 < n < 3001  # some went in, the rest did not
    assert any("cancelled" in t.text for t in studio.ui.toasts)


def test_validation_toggle_on_the_selected_row(studio, models_dir):
    long_name = "a-very-long-file-name-that-cannot-fit-in-the-list-" * 3 + "end.txt"
    with Registry(models_dir).queue("alpha") as q:
        (it,) = q.add_text("Words held out to measure the model. " * 20, source=long_name).added
    studio.st.version += 1  # the queue changed outside the studio: list it again
    frames_until(studio, lambda: len(rows(studio)) == 2)
    studio.pump(1)
    box = rect_of(studio, "training/queue-filter")
    click(studio, (box.x - FILTER_X + 30, box.y + 23 + 19 + 10))  # the second row: the new item
    studio.pump(1)
    press(studio, "training/queue-validation")
    settle(studio)
    with Registry(models_dir).queue("alpha") as q:
        assert q.item(it.id).validation and not q.items()[0].validation
    frames_until(studio, lambda: any(r.endswith(" · validation") for r in rows(studio)))
    studio.pump(1)
    # drawn: the name is shortened, the flag (and kind, tokens, priority) are not
    drawn = [t for t in studio.ui.texts if t.startswith("a-very") and " · text · " in t]
    assert drawn and drawn[0].endswith(" · p0 · val") and "…" in drawn[0], drawn
    press(studio, "training/queue-validation")  # the same item stays selected: toggled off
    settle(studio)
    with Registry(models_dir).queue("alpha") as q:
        assert not q.item(it.id).validation


def test_an_adds_progress_shows_files_mb_and_tokens(studio, tmp_path, models_dir, monkeypatch):
    from cllm.data.dataqueue import DataQueue

    real = DataQueue._file_into
    gate = {"go": False}

    def held(self, batch, path, *args, **kwargs):  # the add waits after its second file
        out = real(self, batch, path, *args, **kwargs)
        while str(path).endswith("f1.txt") and not gate["go"]:
            time.sleep(0.01)
        return out

    monkeypatch.setattr(DataQueue, "_file_into", held)
    d = tmp_path / "few"
    d.mkdir()
    (d / "f0.txt").write_text("a big first file of words.\n" * 40_000)  # 1.08 MB, 1,080,000 tokens
    (d / "f1.txt").write_text("a small second file\n")
    (d / "f2.txt").write_text("a small third file\n")
    studio.st.add_to_queue([str(d)], "alpha")
    # held after the second file: both are counted (the big one, 1,080,000 tokens, as it was
    # read; the small one, 20, as it was added)
    frames_until(studio, lambda: (studio.st.adding or {}).get("tokens", 0) == 1_080_020)
    move(studio, rect_of(studio, "training/Add Files...").center)
    for _ in range(5):  # the add's row is below the panel's fold
        pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=-3, flipped=False))
        studio.step()
    studio.pump(2)
    shown = [t for t in studio.ui.texts if "files" in t and "MB" in t]
    assert shown == ["1/3 files, 1.1 MB, 1,080,020 tokens"], shown
    gate["go"] = True
    frames_until(studio, lambda: studio.st.adding is None)
