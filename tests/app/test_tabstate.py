"""Tab state records: typed fields, item access for code written against the old dicts, and no
silent new attributes."""

from __future__ import annotations

import pytest

from app.tabstate import LLMState, ModelsState, TabState, TrainingState, new_tab_state


def test_declared_fields_are_attributes_and_items():
    s = TrainingState()
    s["dialog"] = "grow"
    assert s.dialog == "grow" and s.get("dialog") == "grow" and "dialog" in s
    assert s.pop("dialog") == "grow" and s.dialog is None  # back to its default
    assert s.get("panel_h", 820) == 820  # None reads as the default given
    s.set["batch_size"] = 4
    assert TrainingState().set == {}  # each record has its own containers


def test_undeclared_keys_live_in_extra_until_they_become_fields():
    s = ModelsState()
    assert "jobs_open" not in s
    assert s.setdefault("jobs_open", False) is False
    s["jobs_open"] = True
    assert s.extra == {"jobs_open": True} and s.get("jobs_open") is True
    assert s.pop("jobs_open") is True and s.pop("missing", 7) == 7
    with pytest.raises(KeyError):
        s["missing"]


def test_a_typo_in_an_attribute_is_an_error_not_a_new_key():
    s = LLMState()
    with pytest.raises(AttributeError):
        s.replys = []  # type: ignore[attr-defined]


def test_each_tab_gets_its_record():
    assert type(new_tab_state("training")) is TrainingState
    assert type(new_tab_state("crawler")) is TabState  # a tab without one: the mapping base
