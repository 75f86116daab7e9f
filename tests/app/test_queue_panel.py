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
