"""A kill -9 loop over save, rename, copy (with delete), grow and export, runnable against any
checkout (only the Registry calls every version has):

    python tests/cllm/models/killloop.py DIR TRIALS      # one JSON line per trial, then totals

A trial starts a worker doing random operations, kills it with SIGKILL at a random moment, opens
the folder again and checks: exactly one of the two names of the main model exists, every model
loads, every queue holds its 5 items (nothing lost), and no temporary file survived the open. A
trial that lost something starts the next one from a fresh folder.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

WORKER = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from cllm.errors import BusyError
    from cllm.models.registry import Registry
    folder, out, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    reg = Registry(folder)
    print("ready", flush=True)
    while True:
        name = "a" if reg.path("a").exists() else "b"
        op = rng.choice(["save", "rename", "copy", "grow", "export"])
        try:
            if op == "save":
                reg.save(reg.load(name))
            elif op == "rename":
                reg.rename(name, "b" if name == "a" else "a")
            elif op == "copy":
                if reg.path("c").exists():
                    reg.delete("c")
                reg.copy(name, "c")
            elif op == "grow":
                n = reg.info(name).config.n_layer
                if n < 4:
                    reg.grow(name, n + 1)
            else:
                reg.export(name, out / "export.cllm")
        except BusyError:
            pass
    """
)
TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 60


def fresh(folder: Path) -> None:
    from cllm.engine.config import GPTConfig
    from cllm.models.registry import Registry

    shutil.rmtree(folder, ignore_errors=True)
    reg = Registry(folder)
    cfg = GPTConfig(vocab_size=257, n_embd=32, n_layer=1, n_head=2, block_size=32)
    reg.create("a", config=cfg, tokenizer="byte", text="", train={"seq_len": 16})
    q = reg.queue("a")
    for i in range(5):
        q.add_text(f"document {i}. " + TEXT, source=str(i))
    q.close()


def check(folder: Path, out: Path) -> tuple[list[str], list[str]]:
    """(what was lost or broken, temporary files that survived the open)."""
    from cllm.engine.lm import load_model
    from cllm.models.registry import Registry

    lost = []
    reg = Registry(folder)
    names = reg.names()
    main = [n for n in names if n in ("a", "b")]
    if len(main) != 1:
        lost.append(f"main model under {main or 'no name'}")
    for n in names:
        try:
            load_model(reg.path(n))
            items = reg.info(n).queue_items
        except Exception as err:  # noqa: BLE001 - a model that does not load is what we count
            lost.append(f"{n} does not load ({str(err)[:100]})")
            continue
        if items != 5:
            lost.append(f"{n} has {items} of 5 queue items")
    for d in (folder / "a_queue", folder / "b_queue", folder / "c_queue"):
        stem = d.name[: -len("_queue")]
        if d.is_dir() and not (folder / f"{stem}.cllm").exists():
            lost.append(f"{d.name} without its model")
    temps = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    if main:
        try:
            reg.export(main[0], out / "export.cllm")  # an export sweeps its own leftovers, if any
        except Exception as err:  # noqa: BLE001
            lost.append(f"export failed ({str(err)[:100]})")
    temps += [f"out/{p.name}" for p in out.iterdir() if p.name != "export.cllm"]
    return lost, temps


def main(root: str, trials: int) -> None:
    root = Path(root)
    folder, out = root / "models", root / "out"
    out.mkdir(parents=True, exist_ok=True)
    fresh(folder)
    rng = random.Random(0)
    env = {**os.environ}
    intact = clean = 0
    for trial in range(trials):
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(folder), str(out), str(trial)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        proc.stdout.readline()
        time.sleep(rng.uniform(0.05, 1.5))
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        proc.stdout.close()
        proc.stderr.close()
        lost, temps = check(folder, out)
        if not alive:
            lost.append(f"the worker failed before the kill: {err[-1] if err else '?'}")
        intact += not lost
        clean += not temps
        print(json.dumps({"trial": trial, "lost": lost, "temps": temps}), flush=True)
        if lost:
            fresh(folder)
        for p in folder.iterdir():  # each trial counts only its own leftovers
            if p.name.startswith("."):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        for p in out.iterdir():
            p.unlink()
    print(json.dumps({"trials": trials, "nothing_lost": intact, "no_temp_survived": clean}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
