import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cllm.engine.config import GPTConfig
from cllm.errors import AlreadyExistsError, ValidationError
from cllm.models.rules import (
    RESERVED,
    check_layers,
    check_target_epochs,
    check_unique,
    default_name,
    free_variant,
    validate_name,
    validate_train_settings,
)

NAME_CHARS = string.ascii_letters + string.digits + "_-"
valid_names = st.text(NAME_CHARS, min_size=1, max_size=64).filter(
    lambda s: not s.startswith("-") and s.upper() not in RESERVED
)


@given(valid_names)
def test_valid_names_accepted(name):
    assert validate_name(name) == name


@given(st.text(min_size=1, max_size=80))
def test_any_text_is_either_valid_or_refused_by_the_rules(name):
    ok = (
        len(name) <= 64
        and all(c in NAME_CHARS for c in name)
        and not name.startswith("-")
        and name.upper() not in RESERVED
    )
    if ok:
        assert validate_name(name) == name
    else:
        with pytest.raises(ValidationError):
            validate_name(name)


@pytest.mark.parametrize(
    "name, words",
    [
        ("", "empty"),
        ("x" * 65, "at most 64"),
        ("x" * 300, "at most 64"),
        ("../x", "'.'"),
        ("a/b", "'/'"),
        ("a b", "' '"),
        ("con.txt", "'.'"),
        ("modèle", "ASCII"),
        ("模型", "ASCII"),
        ("-x", "starts with '-'"),
        ("CON", "reserved by Windows"),
        ("con", "reserved by Windows"),
        ("Lpt9", "reserved by Windows"),
        ("com1", "reserved by Windows"),
        ("nul", "reserved by Windows"),
    ],
)
def test_hostile_names_refused_with_the_rule(name, words):
    with pytest.raises(ValidationError, match=None) as err:
        validate_name(name)
    msg = str(err.value)
    assert words in msg and "\n" not in msg


def test_non_reserved_lookalikes_are_fine():
    for name in ("COM0", "COM10", "CONSOLE", "LPT", "aux_1", "nul-"):
        assert validate_name(name) == name
    with pytest.raises(ValidationError):
        validate_name(None)


def test_unique_ignores_case():
    check_unique("b", ["a", "c"])
    with pytest.raises(AlreadyExistsError, match="ignoring case"):
        check_unique("Model", ["model"])
    with pytest.raises(ValidationError, match="already exists"):
        check_unique("x", ["x"])


@given(st.sets(st.integers(1, 30)), st.booleans())
def test_default_name_is_first_free(taken, upper):
    existing = [(f"MODEL_{i}" if upper else f"model_{i}") for i in taken]
    name = default_name(existing)
    n = int(name.split("_")[1])
    assert n not in taken and all(i in taken for i in range(1, n))
    validate_name(name)


def test_free_variant():
    assert free_variant("a", []) == "a"
    assert free_variant("a", ["A", "a_2"]) == "a_3"
    long = "x" * 64
    v = free_variant(long, [long])
    assert len(v) == 64 and v.endswith("_2")


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_target_epochs_never_below_trained(target, trained):
    if target >= trained:
        assert check_target_epochs(target, trained) == target
    else:
        with pytest.raises(ValidationError, match="prevent reducing epochs"):
            check_target_epochs(target, trained)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None, 10**9])
def test_target_epochs_bad_types(bad):
    with pytest.raises(ValidationError):
        check_target_epochs(bad, 0)


@given(st.integers(1, 256), st.integers(1, 256))
def test_layers_never_fewer(new, current):
    if new >= current:
        assert check_layers(new, current) == new
    else:
        with pytest.raises(ValidationError, match="never goes down"):
            check_layers(new, current)


def test_layers_bounds():
    for bad in (0, -3, 257, 2.5, "4"):
        with pytest.raises(ValidationError):
            check_layers(bad, 1)


CFG = GPTConfig(vocab_size=64, n_embd=16, n_layer=1, n_head=2, block_size=128)


@given(
    st.integers(1, 1024),
    st.integers(1, 128),
    st.floats(1e-6, 1.0),
    st.floats(0.0, 10.0),
    st.floats(1e-3, 100.0),
    st.integers(0, 10_000),
    st.floats(0.0, 0.5),
)
def test_sane_settings_accepted(bs, sl, lr, wd, clip, warmup, vf):
    s = dict(
        batch_size=bs,
        seq_len=sl,
        learning_rate=lr,
        weight_decay=wd,
        grad_clip=clip,
        warmup=warmup,
        val_fraction=vf,
    )
    assert validate_train_settings(s, CFG) == s


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("batch_size", 0, "batch_size"),
        ("batch_size", 1025, "batch_size"),
        ("batch_size", 10**12, "batch_size"),
        ("batch_size", "8", "whole number"),
        ("batch_size", True, "whole number"),
        ("seq_len", 129, "context of 128"),
        ("seq_len", 0, "seq_len"),
        ("learning_rate", 0.0, "learning_rate"),
        ("learning_rate", -1e-3, "learning_rate"),
        ("learning_rate", 2.0, "learning_rate"),
        ("learning_rate", float("nan"), "finite"),
        ("learning_rate", float("inf"), "finite"),
        ("weight_decay", -0.1, "weight_decay"),
        ("grad_clip", 0.0, "grad_clip"),
        ("warmup", -1, "warmup"),
        ("val_fraction", 0.6, "val_fraction"),
        ("beta2", 1.0, "beta2"),
        ("bogus", 1, "unknown training setting"),
    ],
)
def test_absurd_settings_refused(key, value, words):
    with pytest.raises(ValidationError, match=words):
        validate_train_settings({key: value}, CFG)


@given(st.dictionaries(st.sampled_from(["batch_size", "seq_len", "warmup"]), st.integers()))
def test_integer_settings_property(d):
    bounds = {"batch_size": (1, 1024), "seq_len": (1, 128), "warmup": (0, 10_000_000)}
    ok = all(bounds[k][0] <= v <= bounds[k][1] for k, v in d.items())
    if ok:
        assert validate_train_settings(d, CFG) == d
    else:
        with pytest.raises(ValidationError):
            validate_train_settings(d, CFG)


def test_min_lr_above_lr_refused():
    with pytest.raises(ValidationError, match="min_lr"):
        validate_train_settings({"learning_rate": 1e-4, "min_lr": 1e-3})
