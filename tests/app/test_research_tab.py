"""The Research tab driven through the real event loop: folder, scan, search, sort, view, queue."""

from __future__ import annotations

import pygame
import pytest

from app.tabs import research as tab_research
from cllm.models.registry import Registry

from .conftest import frames_until, key, move, press, settle, type_text

CTRL = pygame.KMOD_LCTRL


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "papers"
    (d / "sub").mkdir(parents=True)
    (d / "alpha.txt").write_text("attention is all you need\n")
    (d / "notes.md").write_text("# Notes\n\n" + "A line of notes about spheres.\n" * 20)
    (d / "long.txt").write_text("".join(f"line {i} of a long file\n" for i in range(1, 301)))
    (d / "sub" / "code.py").write_text("print('hello')\n")
    (d / "empty.txt").write_text("")
    return d


@pytest.fixture
def research(studio, folder, monkeypatch):
    monkeypatch.chdir(folder.parent)  # the default folder, ./docs/research, is missing here
    press(studio, "tab:Research")
    s = tab_research.state(studio.st)
    frames_until(studio, lambda: s["error"] == "missing")
    # choose the folder with the in-app browser: type its path, Enter, Choose Folder
    press(studio, "research/Folder...")
    press(studio, "research/dialog:files/fb-path")
    key(studio, pygame.K_a, CTRL)
    type_text(studio, str(folder))
    key(studio, pygame.K_RETURN)
    frames_until(studio, lambda: s["browser"].cwd == folder and s["browser"].entries is not None)
    press(studio, "research/dialog:files/fb-ok")
    frames_until(studio, lambda: s["listing"] is not None and s["listing"].folder == folder)
    studio.pump(1)
    return studio


def names(studio):
    return [e.name for e in tab_research.visible(tab_research.state(studio.st))]


def test_missing_default_folder_shows_a_hint_then_lists_the_chosen_one(research, folder):
    s = tab_research.state(research.st)
    assert s["folder"] == folder and s["error"] == ""
    # folders first, then files by name
    assert names(research) == ["sub", "alpha.txt", "empty.txt", "long.txt", "notes.md"]


def test_scan_search_and_sort(research):
    s = tab_research.state(research.st)
    press(research, "research/Scan")
    frames_until(research, lambda: s["listing"].recursive)
    assert "sub/code.py" in names(research) and "sub" not in names(research)
    # search filters by name
    press(research, "research/search")
    type_text(research, ".TXT")
    assert names(research) == ["alpha.txt", "empty.txt", "long.txt"]
    key(research, pygame.K_a, CTRL)
    key(research, pygame.K_BACKSPACE)
    assert len(names(research)) == 5
    # sort by size; clicking the active sort reverses it
    press(research, "research/sort:Size")
    assert s["sort"] == ("Size", False)
    sizes = [e.size for e in tab_research.visible(s)]
    assert sizes == sorted(sizes)
    press(research, "research/sort:Size")
    assert s["sort"] == ("Size", True)
    sizes = [e.size for e in tab_research.visible(s)]
    assert sizes == sorted(sizes, reverse=True)
    press(research, "research/sort:Type")
    assert s["sort"] == ("Type", False)
    assert [e.type for e in tab_research.visible(s)][0] == "md"
    # Up leaves the scan and goes to the parent folder
    folder = s["folder"]
    press(research, "research/Up")
    up = folder.parent
    frames_until(research, lambda: s["listing"] is not None and s["listing"].folder == up)
    assert "papers" in names(research)


def test_open_a_file_scroll_it_and_add_it_to_the_queue(research, folder, models_dir):
    s = tab_research.state(research.st)
    press(research, "research/file:long.txt")
    frames_until(research, lambda: s["view"] is not None)
    research.pump(1)
    assert s["view"].lines[0] == "line 1 of a long file" and len(s["view"].lines) == 300
    first, last, n = s["shown"]
    assert (first, n) == (1, 300) and 30 < last < 60
    # the wheel over the viewer scrolls it
    move(research, (900, 500))
    pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=-5, flipped=False))
    research.pump(2)
    first2, last2, _ = s["shown"]
    assert first2 == 16 and last2 == last + 15
    # Add to Queue sends the open file to the current model's queue
    assert research.st.current == "alpha"
    press(research, "research/Add to Queue")
    settle(research)
    with Registry(models_dir).queue("alpha") as q:
        sources = [it.source for it in q.items()]
    assert str(folder / "long.txt") in sources
    assert "Added long.txt to alpha's queue" in research.ui.toasts[-1].text
    press(research, "research/Add to Queue")  # the same file again: stored once
    settle(research)
    assert "already in" in research.ui.toasts[-1].text
    press(research, "research/file:empty.txt")
    frames_until(research, lambda: s["view"].path.name == "empty.txt")
    press(research, "research/Add to Queue")
    settle(research)
    assert "skipped (empty)" in research.ui.toasts[-1].text
    with Registry(models_dir).queue("alpha") as q:
        assert sum(it.source == str(folder / "long.txt") for it in q.items()) == 1


def test_clicking_a_folder_opens_it(research, folder):
    s = tab_research.state(research.st)
    press(research, "research/file:sub")
    frames_until(research, lambda: s["listing"].folder == folder / "sub")
    assert names(research) == ["code.py"]


def test_large_files_are_read_partially_and_binary_is_not_shown(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("".join(f"{i:06d} é\n" for i in range(20000)))
    view = tab_research.read_file(big, limit=1000)
    assert view.partial and view.size == big.stat().st_size
    assert view.lines[0] == "000000 é" and all(len(line) == 8 for line in view.lines)
    blob = tmp_path / "x.bin"
    blob.write_bytes(b"\x00\x01\x02" * 100)
    assert tab_research.read_file(blob).binary


def test_long_lines_wrap_in_the_viewer_and_the_line_count_stays_logical(research, folder):
    words = " ".join(f"word{i}" for i in range(50))  # under MAX_LINE characters
    (folder / "wide.txt").write_text(f"short\n    {words}\nend\n")
    s = tab_research.state(research.st)
    press(research, "research/Refresh")
    frames_until(research, lambda: "wide.txt" in names(research))
    press(research, "research/file:wide.txt")
    frames_until(research, lambda: s.view is not None and s.view.path.name == "wide.txt")
    research.pump(2)
    rows = s.wrapped[1]
    assert [r[0] for r in rows if not r[2]] == [0, 1, 2]  # one numbered row per line
    cont = [r for r in rows if r[2]]
    assert len(cont) >= 3 and all(r[0] == 1 and r[1].startswith("    ") for r in cont)
    assert " ".join(r[1].strip() for r in rows if r[0] == 1).split() == words.split()
    assert s.shown == (1, 3, 3)
    assert any(t.startswith("Lines 1-3 of 3") for t in research.ui.texts)
