"""The documentation in docs/ checked against the code.

- docs/cli.md: every command, argument, choice and JSON field of the real parsers is documented
  and nothing else is; the ```console examples run in order in an empty folder, print the output
  lines they show, and exit as marked (``<!-- doctest: exit 2 -->``; ``skip`` is not run).
- docs/models-folder.md: side files, naming rules and limits match cllm.models.rules and the
  registry.
- docs/model-file.md: the keys and tensors it lists are exactly those of real saved files, and its
  Python example runs.
- docs/tabs.md: the flags of `python -m app` match its parser.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


# ---------------------------------------------------------------------------------- markdown


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body up to the next heading of any level), outside code blocks."""
    out: list[tuple[str, list[str]]] = [("", [])]
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6} ", line):
            out.append((line.lstrip("#").strip(), []))
        else:
            out[-1][1].append(line)
    return [(h, "\n".join(body)) for h, body in out]


def tables(body: str) -> dict[str, list[list[str]]]:
    """Tables of a section by the title of their first column: rows of cells, header left out."""
    found: dict[str, list[list[str]]] = {}
    rows: list[list[str]] = []
    for line in body.splitlines() + [""]:
        if line.startswith("|"):
            # a '|' inside backticks is not a cell border
            cells = re.split(r"(?<!\\)\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", line.strip().strip("|"))
            rows.append([c.strip() for c in cells])
        elif rows:
            found[rows[0][0].lower()] = [r for r in rows[2:]]
            rows = []
    return found


def code(cell: str) -> str:
    m = re.search(r"`([^`]+)`", cell)
    return m.group(1) if m else ""


def section(text: str, heading: str) -> str:
    for h, body in sections(text):
        if h == heading:
            return body
    raise AssertionError(f"no section {heading!r}")


# ---------------------------------------------------------------------------------- parsers


def parsers() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every parser of both entry points by command path, e.g. ('cllm', 'models', 'list')."""
    from cllm import cli
    from cllm.cli import train

    out = {("cllm.train",): train.build_parser()}

    def walk(path: tuple[str, ...], p: argparse.ArgumentParser) -> None:
        out[path] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(path + (name,), sub)

    walk(("cllm",), cli.build_parser())
    return out


def is_group(p: argparse.ArgumentParser) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) for a in p._actions)


def arguments(p: argparse.ArgumentParser) -> dict[str, set[str] | None]:
    """Documented name -> choices: options by flag, positionals by metavar or DEST."""
    out: dict[str, set[str] | None] = {}
    for a in p._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = max(a.option_strings, key=len) if a.option_strings else a.metavar or a.dest.upper()
        out[name] = {str(c) for c in a.choices} if a.choices and a.option_strings else None
    return out


def doc_arguments(rows: list[list[str]]) -> dict[str, set[str] | None]:
    out: dict[str, set[str] | None] = {}
    for row in rows:
        words = code(row[0]).split()
        choices = None
        if len(words) > 1 and words[1].startswith("{"):
            choices = set(words[1].strip("{}").split(","))
        assert words[0] not in out, f"{words[0]} documented twice"
        out[words[0]] = choices
    return out


def command_sections(text: str) -> dict[tuple[str, ...], str]:
    out = {}
    for h, body in sections(text):
        m = re.fullmatch(r"`python -m (cllm\.train|cllm)((?: [a-z]+)*)`", h)
        if m:
            out[(m.group(1),) + tuple(m.group(2).split())] = body
    return out


def command_of(argv: list[str], module: str) -> tuple[str, ...]:
    """The command path an example line runs, e.g. ('cllm', 'queue', 'add')."""
    all_ = parsers()
    path = (module,)
    for word in argv:
        if path + (word,) not in all_:
            break
        path += (word,)
    return path


def test_every_command_and_argument_is_documented():
    docs = command_sections(read("cli.md"))
    real = parsers()
    leaves = {k for k, p in real.items() if not is_group(p)}
    assert set(docs) - set(real) == set(), "documented commands that do not exist"
    assert leaves - set(docs) == set(), "commands missing from docs/cli.md"
    for key in sorted(leaves):
        rows = tables(docs[key]).get("argument")
        assert rows, f"{' '.join(key)}: no argument table"
        documented, actual = doc_arguments(rows), arguments(real[key])
        assert set(documented) == set(actual), (
            f"{' '.join(key)}: missing {set(actual) - set(documented)}, "
            f"not real {set(documented) - set(actual)}"
        )
        for name, choices in actual.items():
            assert documented[name] == choices, f"{' '.join(key)} {name}: choices {choices}"


def test_documented_defaults_are_the_parsers():
    """A '(default X)' in an argument's meaning is the parser's default, where it has one."""
    docs, real = command_sections(read("cli.md")), parsers()
    checked = 0
    for key, body in docs.items():
        defaults = {
            max(a.option_strings, key=len): a.default
            for a in real[key]._actions
            if a.option_strings and a.default not in (None, False, [], argparse.SUPPRESS)
        }
        for row in tables(body).get("argument", []):
            m = re.search(r"default (\S+?)(?:[),;\s]|$)", row[1])
            name = code(row[0]).split()[0]
            if not m or name not in defaults:
                continue
            want, doc = defaults[name], m.group(1)
            same = float(doc) == want if isinstance(want, (int, float)) else doc == str(want)
            assert same, f"{' '.join(key)} {name}: doc says default {doc}, parser has {want!r}"
            checked += 1
    assert checked >= 30


def test_json_fields_of_crawl_and_models_list():
    """Fields of JSON output not produced by the examples, taken from the code that prints it."""
    from cllm.cli import crawl as cli_crawl
    from cllm.crawl.crawler import CrawlSnapshot
    from cllm.data.dataqueue import QueueItem
    from cllm.models.registry import ModelInfo

    docs = command_sections(read("cli.md"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli_crawl._summary(argparse.Namespace(json=True), "m", CrawlSnapshot(), 0.0)
    assert field_names(docs[("cllm", "crawl")])[0] == set(json.loads(out.getvalue()))
    listed = field_names(docs[("cllm", "models", "list")])[0]
    assert listed == {f.name for f in dataclasses.fields(ModelInfo)}
    items = field_names(docs[("cllm", "queue", "list")])[0]
    assert items == {f.name for f in dataclasses.fields(QueueItem)}


def field_names(body: str) -> tuple[set[str], set[str]]:
    """(all documented JSON fields, the required ones: rows not marked 'Optional')."""
    rows = tables(body).get("field", [])
    names = {code(r[0]) for r in rows}
    return names, {code(r[0]) for r in rows if not r[1].startswith("Optional")}


# ---------------------------------------------------------------------------------- examples


def console_blocks(text: str) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """(marker, [(command, shown output lines)]) of every ```console block, in order."""
    blocks = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != "```console":
            continue
        prev = next((x.strip() for x in reversed(lines[:i]) if x.strip()), "")
        m = re.fullmatch(r"<!-- doctest: (.+?) -->", prev)
        cmds: list[tuple[str, list[str]]] = []
        for body in lines[i + 1 :]:
            if body.startswith("```"):
                break
            if body.startswith("$ "):
                cmds.append((body[2:], []))
            elif body.strip():
                cmds[-1][1].append(body.strip())
        blocks.append((m.group(1) if m else "run", cmds))
    return blocks


def run_line(line: str, cwd: Path, monkeypatch) -> tuple[int, str, str]:
    """Run one example: `python -m cllm...` in this process (fast), anything else in bash."""
    words = shlex.split(line)
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    plain = not re.search(r"[|<>;&]", line)
    if plain and words[:2] == ["python", "-m"] and words[2] in ("cllm", "cllm.train"):
        from cllm import cli
        from cllm.cli import train

        main = train.main if words[2] == "cllm.train" else cli.main
        out, err = io.StringIO(), io.StringIO()
        with monkeypatch.context() as mp:
            mp.chdir(cwd)
            mp.delenv("CLLM_MODELS_DIR", raising=False)
            for k, v in env.items():
                mp.setenv(k, v)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(words[3:])
                except SystemExit as e:  # argparse
                    rc = e.code if isinstance(e.code, int) else 2
        return rc, out.getvalue(), err.getvalue()
    r = subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=shell_env(), capture_output=True, text=True, timeout=120
    )
    return r.returncode, r.stdout, r.stderr


def shell_env() -> dict[str, str]:
    """This Python first on PATH, the project importable, no models folder set."""
    env = {k: v for k, v in os.environ.items() if k != "CLLM_MODELS_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    return env


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The folder the docs/cli.md examples ran in, and the JSON they printed by command."""
    cwd = tmp_path_factory.mktemp("cli-examples")
    printed: dict[tuple[str, ...], list] = {}
    with pytest.MonkeyPatch.context() as mp:
        for marker, cmds in console_blocks(read("cli.md")):
            if marker == "skip":
                continue
            want = 2 if marker == "exit 2" else 0
            assert marker in ("run", "exit 2"), f"unknown doctest marker {marker!r}"
            for line, shown in cmds:
                rc, out, err = run_line(line, cwd, mp)
                assert rc == want, f"$ {line}\nexit {rc}, expected {want}\n{out}\n{err}"
                got = [x.strip() for x in (out + err).splitlines()]
                for text in shown:  # shown output must be real, except abbreviated lines
                    assert "..." in text or text in got, f"$ {line}\nshows {text!r}, got {got}"
                if want == 2:
                    assert len(err.strip().splitlines()) == 1, f"$ {line}: not one line: {err}"
                words = shlex.split(line)
                key = command_of(words[3:], words[2]) if words[:2] == ["python", "-m"] else ()
                if "--json" in words or key[:2] == ("cllm", "bench"):  # bench always prints JSON
                    printed[key] = json.loads(out.strip().splitlines()[-1])
    return cwd, printed


def test_console_examples_run_and_their_json_matches_the_doc(session):
    _, printed = session
    docs = command_sections(read("cli.md"))
    checked = 0
    for key, value in printed.items():
        names, required = field_names(docs[key])
        if not names:
            continue
        for obj in value if isinstance(value, list) else [value]:
            got = set(obj)
            assert required <= got, f"{' '.join(key)}: fields not printed {required - got}"
            assert got <= names, f"{' '.join(key)}: fields not documented {got - names}"
            checked += 1
    assert {("cllm.train",), ("cllm", "bench", "train")} <= set(printed)
    assert checked >= 5


def test_exit_statuses_documented():
    body = section(read("cli.md"), "Common to every command")
    statuses = {r[0] for r in tables(body)["status"]}
    assert {"0", "1", "2", "130", "143"} == statuses
    assert "CLLM_MODELS_DIR" in {code(r[0]) for r in tables(body)["variable"]}


# ---------------------------------------------------------------------------------- models folder


def test_models_folder_doc_matches_rules_and_registry():
    from cllm.models import locks, rules
    from cllm.models.registry import CRAWL_LOCK, PRESETS_FILE, TRAIN_PRESETS, Registry

    text = read("models-folder.md")
    moved = {p.name.replace("x", "NAME", 1) for p in Registry(Path("/m")).side_paths("x")}
    rows = tables(section(text, "Layout"))["path"]
    by_path = {code(r[0]).rstrip("/"): r for r in rows}
    follows = {p for p, r in by_path.items() if r[2].lower().startswith("yes")}
    assert follows == moved, "the side files that rename moves and delete removes"
    lock = locks.lock_path(Path("/m"), "NAME").name
    others = {lock, "NAME" + CRAWL_LOCK, PRESETS_FILE, ".conversations.json", "NAME_queue/items"}
    assert others <= set(by_path) - follows

    rules_text = section(text, "Names")
    reserved = set(re.findall(r"`([A-Z]{3})`", rules_text))
    for prefix, a, b in re.findall(r"`([A-Z]{3})(\d)`-`[A-Z]{3}(\d)`", rules_text):
        reserved |= {f"{prefix}{i}" for i in range(int(a), int(b) + 1)}
    assert reserved == set(rules.RESERVED), "reserved names"
    assert f"1-{rules.NAME_MAX} characters" in rules_text
    limits = section(text, "Epochs and layers")
    assert f"{rules.MAX_LAYERS}" in limits and f"{rules.MAX_EPOCHS:,}" in limits
    presets = tables(section(text, "Training presets"))["preset"]
    assert {code(r[0]) for r in presets} == set(TRAIN_PRESETS)
    for r in presets:
        assert json.loads(code(r[1])) == TRAIN_PRESETS[code(r[0])]
    for name in ("model_1", "NAME.lock", "busy"):
        assert name in text


def test_models_folder_doc_settings_ranges_are_the_rules():
    """Each documented interval: its bounds accepted when closed, refused when open or beyond."""
    from cllm.engine.config import GPTConfig, TrainConfig
    from cllm.errors import ValidationError
    from cllm.models import rules

    cfg = GPTConfig(vocab_size=257, n_embd=32, n_layer=1, n_head=2, block_size=64)
    rows = tables(section(read("models-folder.md"), "Training settings"))["setting"]
    documented = {code(r[0]) for r in rows}
    assert documented == {f.name for f in dataclasses.fields(TrainConfig)} - {"extra"}

    def ok(key: str, value) -> bool:
        extra = {"learning_rate": 1.0} if key == "min_lr" else {}  # min_lr may not exceed lr
        try:
            rules.validate_train_settings({key: value, **extra}, cfg)
            return True
        except ValidationError:
            return False

    for r in rows:
        key = code(r[0])
        if r[1].startswith("one of"):  # a word setting: exactly the words listed
            words = re.findall(r"`([^`]+)`", r[1])
            assert all(ok(key, w) for w in words) and not ok(key, "other"), key
            assert set(words) == set(rules.CHOICES[key]), key
            continue
        m = re.fullmatch(r"([\[(])(\S+), (\S+)([\])])", code(r[1]))
        assert m, f"{key}: no interval in {r[1]!r}"
        whole = "whole number" in r[1]
        num = int if whole else float
        lo = num(m.group(2))
        hi = cfg.block_size if m.group(3) == "context" else num(m.group(3))
        step = 1 if whole else max(1e-6, abs(hi) * 1e-6)
        assert ok(key, lo) == (m.group(1) == "["), f"{key} at {lo}"
        assert ok(key, hi) == (m.group(4) == "]"), f"{key} at {hi}"
        assert not ok(key, lo - step) and not ok(key, hi + step), f"{key} beyond its range"
        if whole:
            assert not ok(key, lo + 0.5), f"{key} accepts a fraction"


# ---------------------------------------------------------------------------------- model file


def test_model_file_doc_lists_exactly_what_files_hold(session):
    from safetensors import safe_open

    from cllm.engine.config import GPTConfig, TrainConfig
    from cllm.engine.modelfile import FORMAT, VERSION

    cwd, _ = session
    text = read("model-file.md")
    files = sorted((cwd / "models").glob("*.cllm")) + [cwd / "demo-export.cllm"]
    assert len(files) >= 3
    md_keys, info_keys, meta_keys, tensors, state_keys = set(), set(), set(), set(), set()
    for path in files:
        with safe_open(str(path), "np") as f:
            md = f.metadata()
            md_keys |= set(md)
            info = json.loads(md["cllm"])
            info_keys |= set(info)
            meta_keys |= set(info["meta"])
            names = set(f.keys())
            if "state.train" in names:
                raw = f.get_tensor("state.train").tobytes().decode()
                state_keys |= set(json.loads(raw))
        n = info["config"]["n_layer"]
        tensors |= {re.sub(r"^h\.\d+\.", "h.N.", t) for t in names}
        assert {f"h.{n - 1}.ln_1.weight", "wte"} <= names and f"h.{n}.ln_1.weight" not in names
        assert md["format"] == FORMAT and md["version"] == str(VERSION)

    def listed(heading: str) -> set[str]:
        return {code(r[0]) for r in next(iter(tables(section(text, heading)).values()))}

    assert listed("`__metadata__`") == md_keys
    assert listed("The `cllm` JSON") == info_keys
    assert listed("`config`") == {f.name for f in dataclasses.fields(GPTConfig)}
    assert listed("`train`") == {f.name for f in dataclasses.fields(TrainConfig)}
    assert listed("`meta`") == meta_keys
    assert listed("Tensors") == tensors
    assert listed("`state.train`") == state_keys


def test_model_file_python_example_runs(session):
    cwd, _ = session
    blocks = re.findall(r"```python\n(.*?)```", read("model-file.md"), re.S)
    assert blocks
    for src in blocks:
        r = subprocess.run(
            [sys.executable, "-c", src],
            cwd=cwd,
            env=shell_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------- tabs


def test_app_flags_documented():
    pytest.importorskip("pygame")
    from app.studio import build_parser

    rows = tables(section(read("tabs.md"), "Command line"))["flag"]
    documented = doc_arguments(rows)
    assert set(documented) == set(arguments(build_parser()))
    text = read("tabs.md")
    for key in ("Ctrl+1", "Ctrl+5", "Ctrl+Tab", "Esc", "Ctrl+Q", "F11"):
        assert key in text
    from app.studio import TABS

    for label, _ in TABS:
        assert f"## {label}" in text


def test_links_between_docs_resolve():
    for name in ("cli.md", "models-folder.md", "model-file.md", "tabs.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", read(name)):
            if "://" not in target:
                assert (DOCS / target).exists(), f"{name}: broken link {target}"
