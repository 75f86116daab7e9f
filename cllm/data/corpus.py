"""The text the project ships: its own docs and source, used to create and train the demo model and
as the tokenizer text of a model created with no data."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # cllm/
ROOT = PACKAGE.parent  # the checkout when installed with `pip install -e`


def corpus_files() -> list[Path]:
    """Docs first (README, docs/*.md), then the source of `cllm` and `app`; sorted, so the corpus
    (and the tokenizer trained on it) is the same on every machine. A non-editable install has no
    docs beside the package, so it falls back to the source alone."""
    files: list[Path] = []
    if (ROOT / "README.md").is_file():
        files.append(ROOT / "README.md")
    if (ROOT / "docs").is_dir():
        files += sorted((ROOT / "docs").rglob("*.md"))
    for pkg in ("cllm", "app"):
        if (ROOT / pkg).is_dir():
            files += sorted(p for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    return files


@lru_cache(maxsize=1)
def demo_corpus() -> str:
    """All corpus files joined with blank lines."""
    texts = []
    for path in corpus_files():
        try:
            texts.append(path.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            continue  # a file being rewritten or not text: the rest is corpus enough
    return "\n\n".join(t for t in texts if t) + "\n"
