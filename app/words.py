"""The library's messages in the studio's words.

``cllm`` speaks to the command line: its errors name flags (``--data``) and setting keys
(``batch_size``). The studio shows the same errors, so before one reaches the screen the advice
about flags becomes advice about the studio's controls, and each setting key becomes the label of
the control that sets it.
"""

from __future__ import annotations

import re

# command-line advice -> the studio's controls (exact phrases of cllm's messages)
PHRASES = [
    (
        "(--data or Add Files)",
        "(Add Files... or Add Folder... under TRAINING DATA on the Training tab, or drop files "
        "on the window)",
    ),
    ("; add --yes", ""),
    (
        "name one with --field",
        "the studio takes the field named text, content or body; rename the column",
    ),
    ("give --epochs or --steps, not both", "give epochs or steps, not both"),
    ("(prevent reducing epochs)", ""),
]

# setting keys -> the labels of the controls that set them
LABELS = {
    "batch_size": "Batch size",
    "seq_len": "Sequence length",
    "learning_rate": "Learning rate",
    "min_lr": "Minimum learning rate",
    "weight_decay": "Weight decay",
    "grad_clip": "Gradient clip",
    "val_fraction": "Validation share",
    "checkpoint_minutes": "Checkpoint minutes",
    "eval_interval": "Eval interval",
    "eval_batches": "Eval batches",
    "checkpoint_interval": "Checkpoint interval",
    "keep_checkpoints": "Checkpoints kept",
    "early_stop": "Early stop",
    "target_epochs": "Epochs (target)",
    "epochs_trained": "epochs trained",
    "vocab_size": "Vocabulary size",
    "n_embd": "Width",
    "n_layer": "Layers",
    "n_head": "Heads",
    "block_size": "Context",
    "n_inner": "MLP width",
}
_KEY = re.compile(r"\b(" + "|".join(sorted(LABELS, key=len, reverse=True)) + r")\b")


def studio_words(msg: str) -> str:
    """``msg`` with command-line advice replaced by the studio's controls and setting keys by
    their labels, as a sentence (capital first letter)."""
    for cli, studio in PHRASES:
        msg = msg.replace(cli, studio)
    msg = _KEY.sub(lambda m: LABELS[m.group(1)], msg).strip()
    return msg[:1].upper() + msg[1:]
