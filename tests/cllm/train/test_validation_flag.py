"""Items flagged for validation: never trained on, measured whole for the validation loss; the
flag is honoured across restarts and when it changes during a run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.cli import main
from cllm.train.sampler import VirtualStream, drop_segments
from cllm.train.trainer import Trainer

from .test_sampler import EOT, ArraySource
from .test_trainer import TEXTS, make_model, run

# upper case, digits, "-" and "_": none of its bytes is in TEXTS (lower case, " ", "." and ",")
HELD = "ZQX-JVK-0123-WYP-4567-FGH-89-BDM_" * 12


def _ids(reg, text: str) -> set[int]:
    return set(np.asarray(reg.load("m").tokenizer.encode(text)).tolist())


def _setup(tmp_path, **train):
    reg = make_model(tmp_path, **train)
    with reg.queue("m") as dq:
        (held,) = dq.add_text(HELD, source="held.txt").added
    held_ids, other = _ids(reg, HELD), _ids(reg, "".join(TEXTS))
    assert not held_ids & other
    return reg, held, held_ids


def _record(t: Trainer, hook=None) -> list:
    """Every training batch, with the step it made; ``hook(step)`` runs before each step."""
    seen = []
    real = t._step

    def step(x, y):
        seen.append((t.step, np.concatenate([x.ravel(), y.ravel()])))
        if hook is not None:
            hook(t.step)
        return real(x, y)

    t._step = step
    return seen


def _has(tokens: np.ndarray, ids: set[int]) -> bool:
    return bool(np.isin(tokens, list(ids)).any())


def test_a_flagged_item_is_measured_never_trained_on_and_survives_a_restart(tmp_path):
    reg, held, held_ids = _setup(tmp_path, target_epochs=3, val_fraction=0.0)
    models = str(tmp_path / "models")

    # unflagged, the item is trained on like any other (so the check below can fail)
    t = Trainer(reg, "m", max_steps=6)
    seen = _record(t)
    run(t)
    assert any(_has(b, held_ids) for _, b in seen)
    assert not t.val_set  # val_fraction 0 and nothing flagged: no validation data

    # flagged from the command line, between runs: the resumed epoch drops it
    assert (
        main(["queue", "set", "m", str(held.id), "--validation", "on", "--models-dir", models]) == 0
    )
    with reg.queue("m") as dq:
        assert dq.item(held.id).validation  # stored in the queue's index
    t = Trainer(reg, "m", eval_interval=2)
    assert t.position and held.id not in [s[0] for s in t.position["items"]]
    seen = _record(t)
    snap = run(t)
    assert snap.state == "done" and snap.epochs_trained == 3, snap.message
    assert seen and not any(_has(b, held_ids) for _, b in seen)  # never trained on

    # the validation set is the flagged item, whole, and the validation loss is its loss
    assert t.val_set
    val_tokens = np.concatenate([np.concatenate([x.ravel(), y.ravel()]) for x, y in t.val_set])
    assert set(val_tokens.tolist()) <= held_ids | {t.eot}
    covered = set(val_tokens.tolist()) & held_ids
    assert covered == held_ids  # the windows spread over all of it
    lm = reg.load("m")
    loss = float(np.mean([lm.gpt.forward(x, y) for x, y in t.val_set]))
    assert snap.val_loss == pytest.approx(loss, rel=1e-5)
    assert lm.meta.last_val_loss == pytest.approx(loss, rel=1e-5)
    assert any("best loss starts over" in line for line in snap.log)


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_flagging_during_a_run_takes_the_item_out_at_once(tmp_path, sampling):
    reg, held, held_ids = _setup(
        tmp_path, target_epochs=2, val_fraction=0.0, sampling=sampling, batch_size=2
    )
    t = Trainer(reg, "m", eval_interval=1000)
    bpe = t.snapshot().batches_per_epoch
    flag_at = 3

    def flag(step: int) -> None:  # the studio's toggle, from another connection
        if step == flag_at:
            with reg.queue("m") as dq:
                dq.set_item_validation(held.id, True)

    seen = _record(t, flag)
    snap = run(t)
    assert snap.state == "done" and snap.epochs_trained == 2, snap.message
    before = [b for s, b in seen if s < flag_at]
    after = [b for s, b in seen if s > flag_at]  # the batch of step flag_at was drawn before
    assert after and not any(_has(b, held_ids) for b in after)
    if sampling == "sequential":  # the stream reads items in order: the held one came last
        assert not any(_has(b, held_ids) for b in before)
        assert snap.step < 2 * bpe  # both epochs were shorter without it
    assert t.val_set and snap.val_loss is not None
    log = "\n".join(snap.log)
    assert "left the epoch" in log and "best loss starts over" in log
    # measured after the first step that followed the change (the model's step flag_at + 2;
    # the recorded steps count those done before each), not at the next eval_interval
    h = reg.history("m")
    val = dict(zip(np.asarray(h["steps"]).tolist(), np.asarray(h["val_loss"]), strict=True))
    assert not np.isnan(val[flag_at + 2]) and np.isnan(val[flag_at + 1])


def test_an_item_given_back_joins_the_next_epoch(tmp_path):
    reg, held, held_ids = _setup(tmp_path, target_epochs=2, val_fraction=0.0)
    with reg.queue("m") as dq:
        dq.set_validation([held.id])
    t = Trainer(reg, "m")
    bpe = t.snapshot().batches_per_epoch
    assert t.val_set

    def unflag(step: int) -> None:
        if step == 1:
            with reg.queue("m") as dq:
                dq.set_item_validation(held.id, False)

    seen = _record(t, unflag)
    snap = run(t)
    assert snap.state == "done", snap.message
    first = [b for s, b in seen if s < bpe]
    second = [b for s, b in seen if s >= bpe]
    assert not any(_has(b, held_ids) for b in first)  # epoch 1 kept its items
    assert any(_has(b, held_ids) for b in second)  # epoch 2 trains on it
    assert not t.val_set and snap.val_loss is None  # nothing is held out any more


def test_removing_items_during_a_run_drops_them(tmp_path):
    reg, held, held_ids = _setup(tmp_path, target_epochs=2)

    def remove(step: int) -> None:
        if step == 2:
            with reg.queue("m") as dq:
                dq.remove(held.id)

    t = Trainer(reg, "m")
    seen = _record(t, remove)
    snap = run(t)
    assert snap.state == "done", snap.message
    assert not any(_has(b, held_ids) for s, b in seen if s > 2)


@settings(max_examples=80, deadline=None)
@given(
    lens=st.lists(st.integers(0, 12), min_size=1, max_size=6),
    drop=st.sets(st.integers(0, 5)),
    data=st.data(),
)
def test_dropping_segments_keeps_a_sequential_stream_where_it_was(lens, drop, data):
    tokens = {i: np.arange(100 * i, 100 * i + m, dtype=np.int32) for i, m in enumerate(lens)}
    segs = [(i, 0, m, 1.0) for i, m in enumerate(lens)]
    old = VirtualStream(ArraySource(tokens), segs, EOT)
    offset = data.draw(st.integers(0, old.length - 1))
    keep = set(range(len(lens))) - drop
    kept, moved = drop_segments(segs, keep, offset)
    assert [s[0] for s in kept] == sorted(keep & set(range(len(lens))))
    new = VirtualStream(ArraySource(tokens), kept, EOT)
    # which segment the offset was in, and where in it
    i = int(np.searchsorted(old.starts, offset, side="right")) - 1
    if i not in drop:  # the same token, in the same place of its item
        assert new.read(moved, 1)[0] == old.read(offset, 1)[0]
        j = [s[0] for s in kept].index(i)
        assert moved - new.starts[j] == offset - old.starts[i]
    else:  # the start of what followed it
        later = [s[0] for s in kept if s[0] > i]
        want = new.starts[[s[0] for s in kept].index(later[0])] if later else new.length
        assert moved == want
    assert drop_segments(segs, keep, None)[1] is None


def test_a_copied_model_keeps_its_flags(tmp_path):
    reg, held, _ = _setup(tmp_path)
    with reg.queue("m") as dq:
        dq.set_validation([held.id])
    reg.copy("m", "m2")
    with reg.queue("m2") as dq:
        flags = {it.source: it.validation for it in dq.items()}
    assert flags == {"text0": False, "text1": False, "text2": False, "held.txt": True}
