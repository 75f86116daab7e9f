"""The Models tab: create (validated as you type), rename, duplicate, delete, grow, export,
import and compare, all through the dialogs with posted events."""

from __future__ import annotations

import pygame

from cllm.models.registry import Registry

from .conftest import frames_until, key, press, settle, type_text

CTRL = pygame.KMOD_LCTRL
D = "models/dialog:"


def _models_tab(studio):
    key(studio, pygame.K_5, CTRL)
    assert studio.tab_name == "models"


def _replace_text(studio, wid: str, text: str) -> None:
    press(studio, wid)
    key(studio, pygame.K_a, CTRL)
    type_text(studio, text)


def test_create_dialog_validates_as_you_type(studio, models_dir):
    _models_tab(studio)
    press(studio, "models/Create New...")
    s = studio.st.tab("models")
    assert s["form"]["name"] == "model_1"  # the first free default name
    _replace_text(studio, D + "create/name", "bad name")
    assert "contains ' '" in _problem(studio)
    assert not _enabled(studio, D + "create/dlg-ok")
    _replace_text(studio, D + "create/name", "ALPHA")  # taken, ignoring case
    assert "already exists" in _problem(studio)
    _replace_text(studio, D + "create/name", "gamma")
    press(studio, D + "create/tok:byte")
    for field, value in (("layers", "1"), ("heads", "3"), ("width", "32"), ("context", "64")):
        _replace_text(studio, D + "create/" + field, value)
    assert "not divisible" in _problem(studio)  # 32 wide, 3 heads
    _replace_text(studio, D + "create/heads", "2")
    assert _problem(studio) is None
    press(studio, D + "create/dlg-ok")
    assert s.get("dialog") is None
    settle(studio)
    info = Registry(models_dir).info("gamma")
    assert (info.config.n_layer, info.config.n_head, info.config.n_embd) == (1, 2, 32)
    assert info.tokenizer_kind == "byte"
    frames_until(studio, lambda: studio.st.current == "gamma")


def _problem(studio):
    from app.tabs.models import form_problem

    return form_problem(studio.st, studio.st.tab("models")["form"])[0]


def _enabled(studio, wid: str) -> bool:
    # a disabled button does not react: click it and see whether the dialog is still open
    before = studio.st.tab("models").get("dialog")
    press(studio, wid)
    after = studio.st.tab("models").get("dialog")
    return before != after


def test_rename_duplicate_delete(studio, models_dir):
    _models_tab(studio)
    reg = Registry(models_dir)
    press(studio, "models/Rename...")
    key(studio, pygame.K_a, CTRL)
    type_text(studio, "renamed")
    key(studio, pygame.K_RETURN)
    settle(studio)
    assert sorted(reg.names()) == ["beta", "renamed"]
    frames_until(studio, lambda: studio.st.info() is not None and studio.st.current == "renamed")

    press(studio, "models/Duplicate...")
    assert studio.st.tab("models")["text"] == "renamed_copy"
    press(studio, D + "prompt/dlg-ok")
    settle(studio)
    assert sorted(reg.names()) == ["beta", "renamed", "renamed_copy"]

    press(studio, "models/Delete...")
    press(studio, D + "confirm/dlg-cancel")
    settle(studio)
    assert "renamed" in reg.names()
    press(studio, "models/Delete...")
    press(studio, D + "confirm/dlg-ok")
    settle(studio)
    assert sorted(reg.names()) == ["beta", "renamed_copy"]
    frames_until(studio, lambda: studio.st.current in ("beta", "renamed_copy"))


def test_rename_refuses_a_bad_name_in_the_dialog(studio, models_dir):
    _models_tab(studio)
    press(studio, "models/Rename...")
    key(studio, pygame.K_a, CTRL)
    type_text(studio, "beta")
    key(studio, pygame.K_RETURN)  # refused: the name is taken, the dialog stays open
    assert studio.st.tab("models").get("dialog") == "rename"
    key(studio, pygame.K_ESCAPE)  # Esc cancels the field and closes the dialog
    assert studio.st.tab("models").get("dialog") is None
    assert sorted(Registry(models_dir).names()) == ["alpha", "beta"]


def test_grow_export_import(studio, models_dir, tmp_path):
    _models_tab(studio)
    press(studio, "models/Grow Layers...")
    assert studio.st.tab("models")["text"] == "2"
    press(studio, D + "prompt/dlg-ok")
    settle(studio)
    assert Registry(models_dir).info("alpha").config.n_layer == 2

    out = tmp_path / "exported"
    out.mkdir()
    press(studio, "models/Export...")
    fb = studio.st.tab("models")["browser"]
    fb.go(out)
    frames_until(studio, lambda: fb.entries is not None and fb.cwd == out)
    press(studio, D + "files/fb-ok")
    settle(studio)
    assert (out / "alpha.cllm").is_file()

    press(studio, "models/Import...")
    fb = studio.st.tab("models")["browser"]
    fb.go(out)
    frames_until(studio, lambda: fb.entries is not None and fb.cwd == out)
    fb.selected = {"alpha.cllm"}
    press(studio, D + "files/fb-ok")
    settle(studio)
    names = Registry(models_dir).names()
    assert len(names) == 3 and "alpha_2" in names  # renamed on the clash


def test_compare(studio):
    _models_tab(studio)
    press(studio, "models/compare")
    s = studio.st.tab("models")
    assert s["comparing"] and s["compare"] == {"alpha", "beta"}
    studio.pump(1)  # the cards drawn before the click get their tick boxes next frame
    press(studio, "models/cmp:beta")
    assert s["compare"] == {"alpha"}
    studio.pump(3)
    assert studio.banner is None


def test_import_a_hugging_face_folder(studio, models_dir, tmp_path):
    """Choosing a GPT-2 folder's config.json imports the folder."""
    from cllm.engine.hf import export_hf

    hf = tmp_path / "gpt2-small"
    export_hf(Registry(models_dir).load("alpha"), hf)
    (hf / "cllm_tokenizer.json").unlink()  # as any Hugging Face folder: tokenizer.json only
    _models_tab(studio)
    press(studio, "models/Import...")
    fb = studio.st.tab("models")["browser"]
    fb.go(hf)
    frames_until(studio, lambda: fb.entries is not None and fb.cwd == hf)
    assert "config.json" in [e.name for e in fb.visible()]
    assert "model.safetensors" not in [e.name for e in fb.visible()]
    fb.selected = {"config.json"}
    press(studio, D + "files/fb-ok")
    settle(studio)
    assert "gpt2-small" in Registry(models_dir).names()
