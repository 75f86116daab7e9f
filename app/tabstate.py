"""Typed records of each tab's own state (what it remembers between frames).

A tab's state used to be a string-keyed dict, so a typo in a key was a silent new entry. Each tab
now has a dataclass here with its fields, defaults and meanings; `AppState.tab(name)` returns it.

Item access (`s["dialog"]`, `s.get(...)`, `s.setdefault(...)`, `s.pop(...)`) still works, for
code written against the dicts: a declared field is the attribute itself, and a key that no field
declares yet lives in `extra`. New code uses the attributes; a key that stays should become a
field. Records have slots: assigning an attribute that no field declares is an error, not a
silent new key.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

_NOTHING = object()


@dataclass(slots=True)
class TabState:
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- mapping access, for code written against the old dicts ----------------------------
    @classmethod
    def _declared(cls, key: str) -> bool:
        return key != "extra" and key in cls.__dataclass_fields__

    def _default(self, key: str) -> Any:
        f = self.__dataclass_fields__[key]
        if f.default_factory is not MISSING:
            return f.default_factory()
        return None if f.default is MISSING else f.default

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key) if self._declared(key) else self.extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if self._declared(key):
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __contains__(self, key: str) -> bool:
        return self._declared(key) or key in self.extra

    def get(self, key: str, default: Any = None) -> Any:
        if self._declared(key):
            value = getattr(self, key)
            return default if value is None else value
        return self.extra.get(key, default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if self._declared(key):
            if getattr(self, key) is None:
                setattr(self, key, default)
            return getattr(self, key)
        return self.extra.setdefault(key, default)

    def pop(self, key: str, default: Any = _NOTHING) -> Any:
        """A declared field goes back to its default; an extra key is removed."""
        if self._declared(key):
            value = getattr(self, key)
            setattr(self, key, self._default(key))
            return value
        if default is _NOTHING:
            return self.extra.pop(key)
        return self.extra.pop(key, default)

    def update(self, **values: Any) -> None:
        for key, value in values.items():
            self[key] = value

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "extra"] + list(self.extra)


@dataclass(slots=True)
class Refusal:
    """Why a control refused a value, shown under that control until `until` (ui.now)."""

    key: str  # the control's setting: "seq_len", "target_epochs", "layers"
    message: str
    until: float


@dataclass(slots=True)
class TrainingState(TabState):
    dialog: str | None = None  # "browser" | "clear" | "import" | "grow" | "save-preset"
    grow_to: int = 0  # the layer count the grow dialog asks for
    stamp: tuple | None = None  # (model, listing version) the sliders were read at
    set: dict[str, Any] = field(default_factory=dict)  # the sliders' values
    refused: Refusal | None = None
    panel_h: int | None = None  # the panel's content height, measured while drawing
    footer_h: int | None = None  # STATUS and ACTIONS' height, measured while drawing
    panel_scrolls: bool = False  # the panel is too short for it: its sliders wheel only focused
    queue_stamp: tuple | None = None
    queue_loading: bool = False
    queue: list[str] | None = None  # the queue's rows, as listed by the worker
    browser: Any = None  # the open FileBrowser
    browse_dir: Path | None = None
    stopping: Any = None  # the trainer STOP was pressed for
    presets: dict[str, dict] | None = None
    presets_stamp: int | None = None
    presets_loading: bool = False
    preset_name: str = ""


@dataclass(slots=True)
class ModelsState(TabState):
    dialog: str | None = None  # create | rename | duplicate | delete | grow | grow-confirm |
    # export | export-hf | import | import-name | clear-history
    comparing: bool = False
    compare: set[str] = field(default_factory=set)  # the models ticked for Compare
    hist: dict[str, tuple] = field(default_factory=dict)  # name -> (version, history or None)
    form: dict[str, str] = field(default_factory=dict)  # the create dialog's fields
    autofocus: bool = False
    text: str = ""  # the one-field dialogs' text
    grow_to: int = 0
    browser: Any = None
    browse_dir: Path | None = None
    import_path: Path | None = None
    eval_text: Path | None = None  # Compare's shared text file
    evals: dict[str, dict] = field(default_factory=dict)  # name -> {"loss", "ppl", "tokens"}
    evaluating: bool = False


@dataclass(slots=True)
class LLMState(TabState):
    convs: list[dict] | None = None  # conversations, once loaded
    cur: int = 0  # the conversation shown
    input: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, top_k, top_p
    replies: list = field(default_factory=list)  # Reply threads writing now
    compare: bool = False
    other: str | None = None  # Compare's second model
    copies: Any = None  # ChatCopies
    server: Any = None  # the OpenAI-compatible server started from the tab (cllm.serve)
    server_starting: bool = False
    server_port: int = 8000


@dataclass(slots=True)
class ResearchState(TabState):
    folder: Path | None = None
    listing: Any = None  # Listing
    error: str = ""
    recursive: bool = False
    search: str = ""
    sort: tuple[str, bool] = ("Name", False)
    selected: Path | None = None
    view: Any = None  # FileView
    loading: Path | None = None
    browser: Any = None
    request: int = 0
    cache: Any = None
    shown: tuple[int, int, int] = (0, 0, 0)  # the viewer's first and last line shown, of n
    wrapped: tuple | None = None  # ((view, width), rows): the viewer's wrapped lines


TAB_STATES: dict[str, type[TabState]] = {
    "training": TrainingState,
    "models": ModelsState,
    "llm": LLMState,
    "research": ResearchState,
}


def new_tab_state(name: str) -> TabState:
    """The record for tab `name`; a tab without one gets the plain mapping-like base."""
    return TAB_STATES.get(name, TabState)()
