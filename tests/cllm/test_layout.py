"""The tree shows the architecture, and its seams hold: the engine imports nothing from the models
folder, the data queue, the trainer, the crawler or the command line; nothing in cllm imports
pygame or the app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLLM = Path(__file__).resolve().parents[2] / "cllm"

# package -> the cllm packages and modules it may import
ALLOWED = {
    "engine": {"engine", "errors", "atomic", "pids"},
    "data": {"engine", "data", "errors", "atomic", "pids"},
    "models": {"engine", "data", "models", "errors", "atomic", "pids"},
    # the crawler feeds a model's queue; training on what it fetches is cllm.train.continuous
    "crawl": {"engine", "data", "models", "crawl", "errors", "atomic", "pids"},
    # the HTTP server serves the models folder; the command line sits above it
    "serve": {"engine", "models", "serve", "errors", "atomic", "pids"},
}


def cllm_imports(path: Path) -> set[str]:
    """The first component below ``cllm`` of every import in a file (top level or in a function)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}: relative import; cllm uses absolute imports")
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] in ("pygame", "app"):
                out.add(parts[0])
            elif parts[0] == "cllm" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_downwards(package):
    for path in sorted((CLLM / package).rglob("*.py")):
        extra = cllm_imports(path) - ALLOWED[package]
        assert not extra, f"{path.relative_to(CLLM.parent)} imports cllm.{sorted(extra)}"


def test_no_pygame_or_app_in_cllm():
    for path in sorted(CLLM.rglob("*.py")):
        assert not {"pygame", "app"} & cllm_imports(path), path


def test_the_tree_shows_the_seams():
    packages = {p.name for p in CLLM.iterdir() if (p / "__init__.py").is_file()}
    assert {"engine", "data", "models", "train", "crawl", "cli"} <= packages
    assert not list(CLLM.glob("cli_*.py"))  # a package, not a prefix
