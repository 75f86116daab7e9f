"""Models tab: a card per model, the selected one's details with its loss history, and the
operations of the registry: create (a dialog that validates as you type), rename, duplicate,
delete, export, import, grow layers, and compare several models' loss histories and settings.
"""

from __future__ import annotations

import math
from pathlib import Path

import pygame

from cllm.engine.config import PRESETS, GPTConfig, format_count
from cllm.errors import CLLMError
from cllm.models import rules

from .. import dialogs
from .. import theme as th
from ..figures import figures
from ..filebrowser import FileBrowser, human_size
from ..state import AppState
from ..tabstate import ModelsState
from ..ui import UI, plural
from . import advanced, jobs_panel

CARD_H = 92
JOBS_MIN_H = 190  # the Jobs panel's title, three rows of buttons and two jobs
CARDS_W = 440
TOKENIZERS = ("bpe", "byte", "char")
FIELDS = (
    ("layers", "Layers", "n_layer"),
    ("heads", "Heads", "n_head"),
    ("width", "Width", "n_embd"),
    ("context", "Context", "block_size"),
)


def wants_frame(st: AppState) -> bool:
    """Nothing here moves by itself: the studio repaints on input, finished jobs and new
    training snapshots, so unchanged frames need not be drawn (the Jobs panel refreshes while
    jobs run)."""
    return jobs_panel.wants_frame(st)


def draw(ui: UI, st: AppState, main: pygame.Rect, panel: pygame.Rect) -> None:
    s = st.tab("models")
    with ui.scope("models"):
        cw = min(CARDS_W, max(280, int(main.w * 0.4)))  # narrow windows: narrower cards
        cards(ui, st, s, pygame.Rect(main.x + 10, main.y + 10, cw, main.h - 20))
        detail = pygame.Rect(main.x + cw + 20, main.y + 10, main.w - cw - 30, main.h - 20)
        with ui.clip(detail):  # a wide comparison table stays inside its panel
            if s.comparing:
                compare(ui, st, s, detail)
            else:
                details(ui, st, s, detail)
        side_panel(ui, st, s, panel)
        dialog(ui, st, s)
        advanced.checkpoints_dialog(ui, st, s)


def in_use(st: AppState, info) -> bool:
    return bool(info.busy) or st.trainer_name == info.name


# ---------------------------------------------------------------------------- cards
def cards(ui: UI, st: AppState, s: ModelsState, r: pygame.Rect) -> None:
    ui.rect(r, th.VIEW_BG, th.VIEW_BORDER)
    ui.label((r.x + 10, r.y + 8), f"MODELS ({len(st.models)})", th.ACCENT)
    inner = pygame.Rect(r.x + 6, r.y + 30, r.w - 12, r.h - 36)
    if not st.models:
        ui.label((inner.x + 4, inner.y + 4), "No models yet: Create New... or Import...", th.HINT)
        return
    off = ui.scroll(inner, "cards", len(st.models) * (CARD_H + 6), step=CARD_H)
    with ui.clip(inner):
        first = off // (CARD_H + 6)
        for i in range(first, min(len(st.models), first + inner.h // (CARD_H + 6) + 2)):
            m = st.models[i]
            card(
                ui,
                st,
                s,
                m,
                pygame.Rect(inner.x, inner.y + i * (CARD_H + 6) - off, inner.w - 12, CARD_H),
            )


def card(ui: UI, st: AppState, s: ModelsState, m, c: pygame.Rect) -> None:
    selected = m.name == st.current or m.name in s.get("multi", ())
    fill = th.shade(th.METRIC_BG, 12) if ui.hover(c) else th.METRIC_BG
    ui.rect(c, fill, th.ACCENT if selected else th.METRIC_BORDER, 2 if selected else 1)
    if s.comparing:  # the checkbox takes its click before the card under it
        box = pygame.Rect(c.right - 100, c.bottom - 26, 94, 20)
        checked = ui.checkbox(box, "compare", m.name in s.compare, key="cmp:" + m.name)
        s.compare ^= {m.name} if checked != (m.name in s.compare) else set()
    if ui.row(c, "card:" + m.name, selected_fill=None, hover_fill=None).pressed:
        if pygame.key.get_mods() & (pygame.KMOD_CTRL | pygame.KMOD_SHIFT | pygame.KMOD_META):
            jobs_panel.toggle(s, m.name, st.current)  # multi-select for Train Selected...
        else:
            s["multi"] = set()
            st.select(m.name)
    x, y = c.x + 10, c.y + 8
    ui.label((x, y), m.name, th.SELECTED if selected else th.TEXT, max_w=c.w - 110)
    busy = in_use(st, m)
    ui.label(
        (c.right - 10, y),
        "In Use" if busy else "Idle",
        th.WARNING if busy else th.HINT,
        align="right",
    )
    cfg, meta = m.config, m.meta
    arch = f"{cfg.n_layer} layers · {format_count(m.n_params)} params"
    epochs = f"Epochs {meta.epochs_trained} / {meta.target_epochs}"
    vocab = f"vocab {cfg.vocab_size:,}"
    if ui.text_size(f"{arch} · {vocab}")[0] <= c.w - 20:  # wide: vocabulary with the size
        arch += f" · {vocab}"
    else:  # narrow: with the epochs, so nothing is cut
        epochs += f" · {vocab}"
    ui.label((x, y + 22), arch, th.TEXT, max_w=c.w - 20)
    ui.label((x, y + 40), epochs, th.TEXT, max_w=c.w - 20)
    ui.label(
        (x, y + 58),
        f"Queue {plural(m.queue_items, 'file')}, {m.queue_tokens:,} tokens",
        th.HINT,
        max_w=c.w - (120 if s.comparing else 20),  # the compare tick box sits at the right
    )


# ---------------------------------------------------------------------------- history
def history(st: AppState, s: ModelsState, name: str) -> dict | None:
    """The model's loss history, read by the worker (it reads the whole file) and cached until
    the models folder changes."""
    cache = s.hist
    got = cache.get(name)
    if got is None or (got[0] != st.version and got[1] is not None):
        cache[name] = (st.version, got[1] if got else None)

        def done(h: dict) -> None:
            cache[name] = (st.version, h)

        def error(err: BaseException) -> None:
            cache[name] = (
                st.version,
                {"steps": [], "train_loss": [], "val_loss": [], "error": str(err)},
            )

        st.worker.submit(st.registry.history, name, done=done, error=error)
    return cache[name][1]


def details(ui: UI, st: AppState, s: ModelsState, r: pygame.Rect) -> None:
    ui.rect(r, th.VIEW_BG, th.VIEW_BORDER)
    m = st.info()
    x, y = r.x + 15, r.y + 10
    if m is None:
        ui.label((x, y), "MODEL DETAILS", th.ACCENT)
        ui.label((x, y + 24), "Select a model on the left.", th.HINT)
        return
    ui.label((x, y), m.name, th.SELECTED)
    ui.label(
        (r.right - 15, y),
        m.busy or ("training here" if in_use(st, m) else "idle"),
        th.WARNING if in_use(st, m) else th.HINT,
        align="right",
        max_w=r.w // 2,
    )
    cfg, tc, meta = m.config, m.train, m.meta
    left = [
        ("File", f"{m.path.name} ({human_size(m.file_size)})"),
        ("Parameters", f"{m.n_params:,} ({format_count(m.n_params)})"),
        ("Tokenizer", f"{m.tokenizer_kind or '?'}, vocabulary {cfg.vocab_size:,}"),
        ("Architecture", f"{cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}"),
        ("Context / MLP", f"{cfg.block_size} tokens / {cfg.n_inner}"),
        ("Created", meta.created or "-"),
        ("Modified", meta.modified or "-"),
    ]
    f = figures(st, m.name)  # a live run's snapshot, as the Training tab shows it
    right = [
        ("Epochs", f"{f.epochs_trained} / {f.target_epochs}"),
        ("Steps / tokens", f"{f.step:,} / {f.tokens:,}"),
        ("Train / best val", f"{_f(f.train_loss)} / {_f(f.best_loss)}"),
        ("Batch x seq", f"{tc.batch_size} x {tc.seq_len}"),
        ("Learning rate", f"{tc.learning_rate:.2e} (min {tc.min_lr:.1e})"),
        ("Queue", f"{plural(m.queue_items, 'file')}, {m.queue_tokens:,} tokens"),
        ("Sources", ", ".join(meta.sources) or "-"),
    ]
    half = (r.w - 30) // 2
    # two columns when they fit, else one: values wrap instead of being cut to "field…"
    columns = ((x, left), (x + half, right)) if half >= 330 else ((x, left + right),)
    col_w = half if len(columns) == 2 else r.w - 30
    bottom = y + 28
    for col, rows in columns:
        yy = y + 28
        for k, v in rows:
            ui.label((col, yy), k, th.HINT)
            for part in ui.wrap(v, col_w - 140)[:3]:
                ui.label((col + 130, yy), part, th.TEXT)
                yy += 19
        bottom = max(bottom, yy)
    top = bottom + 12
    snap = st.snapshot if m.name == st.current else None
    if snap is not None and len(snap.history.get("steps", ())):  # a live run: its own history
        hs = snap.history
        h = {"steps": hs["steps"], "train_loss": hs["train"], "val_loss": hs["val"]}
    else:
        h = history(st, s, m.name)
    chart = pygame.Rect(x, top, r.w - 30, r.bottom - top - 12)
    if h is None:
        ui.rect(chart, th.METRIC_BG, th.METRIC_BORDER)
        ui.text_center(chart, "Loading history...", th.HINT)
        return
    ui.chart(
        chart,
        [
            ("train", h["steps"], h["train_loss"], th.ACCENT),
            ("validation", h["steps"], h["val_loss"], th.VAL_LINE),
        ],
        title="LOSS HISTORY",
    )


def _g(v) -> str:
    return "-" if v is None else f"{v:,.3f}" if v < 1000 else f"{v:,.0f}"


def _f(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def compare(ui: UI, st: AppState, s: ModelsState, r: pygame.Rect) -> None:
    ui.rect(r, th.VIEW_BG, th.VIEW_BORDER)
    x, y = r.x + 15, r.y + 10
    names = [m.name for m in st.models if m.name in s.compare]
    ui.label((x, y), f"COMPARE ({len(names)} models)", th.ACCENT)
    if not names:
        ui.label((x, y + 24), "Tick the models to compare on their cards.", th.HINT)
        return
    series = []
    for i, name in enumerate(names):
        h = history(st, s, name)
        if h is not None:
            color = th.SERIES[i % len(th.SERIES)]
            series.append((name, h["steps"], h["train_loss"], color))
            series.append((name + " val", h["steps"], h["val_loss"], th.mix(color, th.WHITE, 0.5)))
    chart_h = max(160, (r.h - 40) // 2)
    ui.chart(
        (x, y + 26, r.w - 30, chart_h),
        series,
        title="TRAINING AND VALIDATION LOSS (moving average; val lighter)",
        smooth=True,
    )
    # evaluation on one shared text
    ey = y + 36 + chart_h
    if ui.button((x, ey, 220, 26), "Evaluate on a text...", key="eval", enabled=not s.evaluating):
        open_dialog(st, s, "eval-text", None)
    if s.evaluating:
        note = f"Scoring on {s.eval_text.name}..."
    elif s.eval_text is not None:
        note = f"Scored on {s.eval_text.name}: loss per token (nats), perplexity, bits per byte"
    else:
        note = "Score the compared models on one text file you pick"
    ui.label((x + 232, ey + 5), note, th.HINT, max_w=r.w - 30 - 232)
    # settings side by side
    ty = ey + 34
    rows = [
        ("", lambda m: m.name),
        ("Parameters", lambda m: format_count(m.n_params)),
        ("Tokenizer", lambda m: f"{m.tokenizer_kind} / {m.config.vocab_size}"),
        ("Layers x heads", lambda m: f"{m.config.n_layer} x {m.config.n_head}"),
        ("Width / context", lambda m: f"{m.config.n_embd} / {m.config.block_size}"),
        (
            "Epochs",
            lambda m: f"{m.meta.epochs_trained} / {m.meta.target_epochs}",
        ),
        ("Steps", lambda m: f"{m.meta.steps:,}"),
        ("Best val loss", lambda m: _f(m.meta.best_loss)),
        ("Batch x seq", lambda m: f"{m.train.batch_size} x {m.train.seq_len}"),
        ("Learning rate", lambda m: f"{m.train.learning_rate:.2e}"),
        ("Queue tokens", lambda m: f"{m.queue_tokens:,}"),
    ]
    if s.evals:
        rows += [
            ("Text loss", lambda m: _f(s.evals.get(m.name, {}).get("loss"))),
            ("Text perplexity", lambda m: _g(s.evals.get(m.name, {}).get("perplexity"))),
            ("Text bits/byte", lambda m: _g(s.evals.get(m.name, {}).get("bits_per_byte"))),
        ]
    infos = [st.info(n) for n in names]
    col_w = max(90, (r.w - 30 - 140) // max(1, len(infos)))
    for j, (label, fn) in enumerate(rows):
        yy = ty + j * 19
        if yy + 18 > r.bottom:
            break
        ui.label((x, yy), label, th.HINT)
        for i, m in enumerate(infos):
            color = th.SERIES[i % len(th.SERIES)] if j == 0 else th.TEXT
            ui.label((x + 140 + i * col_w, yy), fn(m), color, max_w=col_w - 8)


# ---------------------------------------------------------------------------- right panel
def side_panel(ui: UI, st: AppState, s: ModelsState, panel: pygame.Rect) -> None:
    x, y, w = panel.x + 10, panel.y + 10, panel.w - 20
    ui.section((x, y), "MODELS")
    y += 22
    m = st.info()
    free = m is not None and not in_use(st, m) and not st.is_busy()
    has = m is not None
    buttons = [
        ("Create New...", "create", True),
        ("Import...", "import", True),
        ("Rename...", "rename", free),
        ("Duplicate...", "duplicate", has and not st.is_busy()),
        ("Export...", "export", has),
        ("Export HF...", "export-hf", has and not st.is_busy()),
        ("Grow Layers...", "grow", free),
        ("Clear History...", "clear-history", free),
        ("Delete...", "delete", free),
    ]
    half = (w - 8) // 2
    for i, (label, kind, ok) in enumerate(buttons):
        bx = x + (i % 2) * (half + 8)
        if ui.button((bx, y, half, 30), label, enabled=ok):
            open_dialog(st, s, kind, m)
        if i % 2 == 1 or i == len(buttons) - 1:
            y += 38
    label = "Close Compare" if s.comparing else "Compare..."
    if ui.button((x, y, w, 30), label, key="compare", enabled=len(st.models) > 0):
        s.comparing = not s.comparing
        if s.comparing and not s.compare:
            s.compare = {mm.name for mm in st.models[:3]}
    y += 46
    ui.section((x, y), "SELECTED")
    ui.label((x, y + 20), m.name if m else "(none)", th.SELECTED if m else th.DIM, max_w=w)
    y += 38
    if m is not None and in_use(st, m):
        ui.label((x, y), "In use: stop its training to change it", th.WARNING, max_w=w)
        y += 18
    if st.busy:
        busy = f"{st.busy[-1].what.capitalize()} {st.busy[-1].name}..."
        ui.label((x, y), busy, th.WARNING, max_w=w)
        y += 18
    jobs_top = panel.bottom - JOBS_MIN_H  # the Jobs panel keeps its room below the checkpoints
    y = min(advanced.checkpoints_panel(ui, st, s, m, x, y + 10, w, free, jobs_top), jobs_top)
    jobs_panel.draw(ui, st, s, pygame.Rect(x, y + 12, w, max(0, panel.bottom - y - 22)))


def open_dialog(st: AppState, s: ModelsState, kind: str, m) -> None:
    s.dialog = kind
    existing = [mm.name for mm in st.models]
    if kind == "create":
        s.form = {
            "name": rules.default_name(existing),
            "preset": "tiny",
            "tokenizer": "bpe",
            **_preset_fields("tiny"),
        }
        s.autofocus = True
    elif kind == "rename":
        s.text = m.name
    elif kind == "duplicate":
        s.text = rules.free_variant(f"{m.name}_copy", existing)
    elif kind == "grow":
        s.text = str(m.config.n_layer + 1)
    elif kind == "export":
        s.browser = FileBrowser(
            st.worker, "folder", f"Export {m.name} to a folder", s.browse_dir or Path.cwd()
        )
    elif kind == "export-hf":
        s.browser = FileBrowser(
            st.worker,
            "folder",
            f"Export {m.name} for Hugging Face transformers: choose the folder to put it in",
            s.browse_dir or Path.cwd(),
        )
    elif kind == "eval-text":
        s.browser = FileBrowser(
            st.worker,
            "file",
            "Evaluate the compared models on a text file",
            s.browse_dir or Path.cwd(),
        )
    elif kind == "import":
        s.browser = FileBrowser(
            st.worker,
            "file",
            "Import a model file (.cllm), or a Hugging Face GPT-2 folder's config.json",
            s.browse_dir or Path.cwd(),
            patterns=(".cllm", "config.json"),
        )


def _preset_fields(preset: str) -> dict:
    cfg = PRESETS[preset]
    return {key: str(getattr(cfg, attr)) for key, _, attr in FIELDS}


def name_problem(st: AppState, text: str, keep: str | None = None) -> str | None:
    try:
        rules.validate_name(text)
        rules.check_unique(text, [m.name for m in st.models if m.name != keep])
    except CLLMError as err:
        return str(err)
    return None


def form_problem(st: AppState, f: dict) -> tuple[str | None, GPTConfig | None]:
    """What is wrong with the create form, or the config it describes."""
    problem = name_problem(st, f["name"])
    if problem:
        return problem, None
    vals = {}
    for key, label, attr in FIELDS:
        try:
            vals[attr] = int(f[key])
        except ValueError:
            return f"{label} must be a whole number, got {f[key]!r}", None
    try:
        base = PRESETS[f["preset"]]
        cfg = GPTConfig(vocab_size=base.vocab_size, **vals)
    except CLLMError as err:
        return str(err), None
    return None, cfg


# ---------------------------------------------------------------------------- dialogs
def dialog(ui: UI, st: AppState, s: ModelsState) -> None:
    """The open dialog of the Models tab, one function per kind (DIALOGS)."""
    kind = s.dialog
    if kind is None:
        return
    m = st.info()
    if kind not in ("create", "import") and m is None:
        s.dialog = None
        return
    if kind == "create":
        create_dialog(ui, st, s)
    elif kind in ("export", "import", "export-hf", "eval-text"):
        _browse_dialog(ui, st, s, m, kind)
    elif kind in DIALOGS:  # other kinds belong to panels that draw their own (checkpoints)
        DIALOGS[kind](ui, st, s, m)


def _answer(s: ModelsState, answer: tuple[str, bool | None]) -> str | None:
    """Keep a prompt's text; close the dialog once answered; the text if it was confirmed."""
    text, ok = answer
    s.text = text
    if ok is not None:
        s.dialog = None
    return text if ok else None


def _confirmed(s: ModelsState, ok: bool | None) -> bool:
    """Close a confirmation once answered; whether it was confirmed."""
    if ok is not None:
        s.dialog = None
    return bool(ok)


def _rename(ui: UI, st: AppState, s: ModelsState, m) -> None:
    validate = lambda t: name_problem(st, t, keep=m.name)  # noqa: E731
    text = _answer(
        s,
        dialogs.prompt(ui, f"Rename {m.name}", "New name:", s.text, validate=validate, ok="Rename"),
    )
    if text and text != m.name:
        reg = st.registry
        st.run("rename", m.name, reg.rename, m.name, text, done=lambda _: st.select(text))


def _duplicate(ui: UI, st: AppState, s: ModelsState, m) -> None:
    validate = lambda t: name_problem(st, t)  # noqa: E731
    title, label = f"Duplicate {m.name}", "Name of the copy:"
    text = _answer(s, dialogs.prompt(ui, title, label, s.text, validate=validate, ok="Duplicate"))
    if text:
        done = lambda i: st.say(f"Copied {m.name} to {i.name}", "success")  # noqa: E731
        st.run("copy", m.name, st.registry.copy, m.name, text, done=done)


def _delete(ui: UI, st: AppState, s: ModelsState, m) -> None:
    ok = dialogs.confirm(
        ui,
        f"Delete {m.name}, its queue and its history? This cannot be undone.",
        title="Delete Model",
        ok="Delete",
        danger=True,
    )
    if _confirmed(s, ok):
        name = m.name
        done = lambda _: st.say(f"Deleted {name}", "success")  # noqa: E731
        st.run("delete", name, st.registry.delete, name, done=done)


def _grow(ui: UI, st: AppState, s: ModelsState, m) -> None:
    def problem(t: str) -> str | None:
        try:
            n = int(t)
        except ValueError:
            return f"layers must be a whole number, got {t!r}"
        try:
            rules.check_layers(n, m.config.n_layer)
        except CLLMError as err:
            return str(err)
        return None if n > m.config.n_layer else f"{m.name} already has {n} layers"

    title = f"Grow {m.name} (now {m.config.n_layer} layers)"
    label = "Total layers after growing:"
    text = _answer(s, dialogs.prompt(ui, title, label, s.text, validate=problem, ok="Grow"))
    if text:  # the same confirmation as the Training tab's Layers control
        s.dialog, s.grow_to = "grow-confirm", int(text)


def _grow_confirm(ui: UI, st: AppState, s: ModelsState, m) -> None:
    n = s.grow_to
    ok = dialogs.confirm(
        ui,
        f"Grow {m.name} from {m.config.n_layer} to {n} layers? "
        "The new blocks start as the identity, so the model's outputs are "
        "unchanged until it trains again. Layers can never be removed.",
        title="Grow Layers",
        ok="Grow",
    )
    if _confirmed(s, ok):
        done = lambda i: st.say(f"{i.name} now has {i.config.n_layer} layers", "success")  # noqa: E731
        st.run("grow", m.name, st.registry.grow, m.name, n, done=done)


def _import_name(ui: UI, st: AppState, s: ModelsState, m) -> None:
    path = s.import_path
    label = f"A model named {import_name(path)} exists already. Name of the imported one:"
    validate = lambda t: name_problem(st, t)  # noqa: E731
    answer = dialogs.prompt(
        ui, f"Import {path.name}", label, s.text, validate=validate, ok="Import"
    )
    text = _answer(s, answer)
    if text:
        import_model(st, path, text)


def _clear_history(ui: UI, st: AppState, s: ModelsState, m) -> None:
    ok = dialogs.confirm(
        ui,
        f"Forget {m.name}'s loss history (the chart and the epoch summaries)? "
        "The weights, the epochs and steps trained and the best loss stay.",
        title="Clear History",
        ok="Clear",
        danger=True,
    )
    if _confirmed(s, ok):
        name = m.name
        s.hist.pop(name, None)
        done = lambda _: st.say(f"Cleared {name}'s loss history", "success")  # noqa: E731
        st.run("clear history", name, st.registry.clear_history, name, done=done)


DIALOGS = {
    "rename": _rename,
    "duplicate": _duplicate,
    "delete": _delete,
    "grow": _grow,
    "grow-confirm": _grow_confirm,
    "import-name": _import_name,
    "clear-history": _clear_history,
}


def _browse_dialog(ui: UI, st: AppState, s: ModelsState, m, kind: str) -> None:
    """The file browser of Export, Export HF, Import and Evaluate on a text."""
    paths = s.browser.draw(ui)
    if paths is None:
        return
    s.browse_dir, s.dialog = s.browser.cwd, None
    if not paths:
        return
    reg = st.registry
    if kind in ("export", "export-hf"):
        hf = kind == "export-hf"
        dest = paths[0] / (f"{m.name}-hf" if hf else f"{m.name}.cllm")
        what = " for transformers" if hf else ""
        st.run(
            "export",
            m.name,
            reg.export_hf if hf else reg.export,
            m.name,
            dest,
            refresh=False,
            done=lambda p: st.say(f"Exported {m.name}{what} to {p}", "success"),
        )
    elif kind == "eval-text":
        evaluate_compared(st, s, paths[0])
    elif import_name(paths[0]) in {mm.name for mm in st.models}:  # ask, never rename silently
        s.dialog, s.import_path = "import-name", paths[0]
        s.text = rules.free_variant(import_name(paths[0]), [mm.name for mm in st.models])
    else:
        import_model(st, paths[0], import_name(paths[0]))


def evaluate_compared(st: AppState, s: ModelsState, path: Path) -> None:
    """Score every compared model on one text file, in the worker; the table shows them."""
    from cllm.models.evaluate import evaluate, read_text

    names = [m.name for m in st.models if m.name in s.compare]
    s.eval_text, s.evals, s.evaluating = path, {}, True

    def run() -> dict[str, dict]:
        text, _ = read_text(path)
        return {n: evaluate(st.registry.load(n), text, name=n).to_dict() for n in names}

    def done(results: dict[str, dict]) -> None:
        if s.eval_text == path:
            s.evals, s.evaluating = results, False

    def error(err: BaseException) -> None:
        s.evaluating = False
        st.fail(err)

    st.worker.submit(run, done=done, error=error)


def import_name(path: Path) -> str:
    """The name an imported model gets by default: the file's, or a Hugging Face folder's."""
    return path.parent.name if path.name == "config.json" else path.stem


def import_model(st: AppState, path: Path, name: str) -> None:
    """Import a .cllm file, or the Hugging Face GPT-2 folder whose config.json was picked."""
    hf = path.name == "config.json"
    st.run(
        "import",
        name,
        st.registry.import_hf if hf else st.registry.import_file,
        path.parent if hf else path,
        name,
        done=lambda got: (st.say(f"Imported {got}", "success"), st.select(got)),
    )


def create_dialog(ui: UI, st: AppState, s: ModelsState) -> None:
    f = s.form
    r = ui.begin_dialog("create", (520, 330), "Create New Model")
    if s.autofocus:
        s.autofocus = False  # the name field has the keys as the dialog opens
        ui.focus = ui.id("name")
    x, y, w = r.x + 20, r.y + 44, r.w - 40
    lw = 110
    ui.label((x, y + 5), "Name", th.TEXT)
    res = ui.text_input((x + lw, y, w - lw, 26), "name", f["name"])
    f["name"] = res.text
    y += 36
    ui.label((x, y + 5), "Size preset", th.TEXT)
    bw = (w - lw - 3 * 6) // 4
    for i, p in enumerate(PRESETS):
        if ui.choice((x + lw + i * (bw + 6), y, bw, 26), p, f["preset"] == p, key="preset:" + p):
            f.update(preset=p, **_preset_fields(p))
    y += 36
    ui.label((x, y + 5), "Tokenizer", th.TEXT)
    bw3 = (w - lw - 2 * 6) // 3
    for i, t in enumerate(TOKENIZERS):
        if ui.choice((x + lw + i * (bw3 + 6), y, bw3, 26), t, f["tokenizer"] == t, key="tok:" + t):
            f["tokenizer"] = t
    y += 36
    fw = (w - lw) // 2 - 60
    for i, (key, label, _) in enumerate(FIELDS):
        cx = x + (i % 2) * (w // 2)
        cy = y + (i // 2) * 36
        ui.label((cx, cy + 5), label, th.TEXT)
        f[key] = ui.text_input((cx + lw, cy, fw, 26), key, f[key]).text
    y += 2 * 36 + 4
    problem, cfg = form_problem(st, f)
    if problem:
        for i, line in enumerate(ui.wrap(problem, w)[:2]):
            ui.label((x, y + 18 * i), line, th.ERROR)
    elif cfg is not None:
        from cllm.engine.config import num_params

        ui.label(
            (x, y),
            f"{format_count(num_params(cfg))} parameters; the tokenizer is trained "
            "on the demo corpus",
            th.HINT,
            max_w=w,
        )
    by = r.bottom - 44
    create = ui.button(
        (r.right - 230, by, 100, 30), "Create", key="dlg-ok", enabled=cfg is not None
    )
    if ui.button((r.right - 120, by, 100, 30), "Cancel", key="dlg-cancel"):
        s.dialog = None
    if res.submitted and cfg is not None:
        create = True
    if ui.end_dialog():
        s.dialog = None
    if create and cfg is not None:
        s.dialog = None
        name = f["name"]
        st.run(
            "create",
            name,
            st.registry.create,
            name,
            config=cfg,
            tokenizer=f["tokenizer"],
            done=lambda i: (st.say(f"Created {i.name}", "success"), st.select(i.name)),
        )
