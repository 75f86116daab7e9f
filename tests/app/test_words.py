"""The library's errors reach the studio in its words: no flags, no setting keys."""

import pytest

from app.words import studio_words
from cllm.errors import CLLMError
from cllm.models import rules


def _message(fn, *args) -> str:
    with pytest.raises(CLLMError) as err:
        fn(*args)
    return str(err.value)


def test_refused_target_reads_as_a_sentence():
    said = studio_words(_message(rules.check_target_epochs, 2, 4))
    assert said == "Epochs (target) 2 is below the 4 epochs already trained"


def test_setting_keys_become_the_labels_of_their_controls():
    said = studio_words(_message(rules.validate_train_settings, {"batch_size": 0}))
    assert said.startswith("Batch size must be"), said
    said = studio_words(_message(rules.validate_train_settings, {"learning_rate": -1.0}))
    assert said.startswith("Learning rate must be"), said


def test_command_line_advice_becomes_the_studio_controls():
    msg = "model 'a' has an empty queue: add data first (--data or Add Files)"
    said = studio_words(msg)
    assert "--" not in said and "Add Folder..." in said and said.startswith("Model 'a'")
    assert studio_words("this sweep would create 80 models (more than 64); add --yes") == (
        "This sweep would create 80 models (more than 64)"
    )
    assert "--" not in studio_words("give --epochs or --steps, not both")


def test_a_field_refusal_names_what_the_studio_reads():
    from cllm.data.extract import Skipped
    from cllm.data.records import choose_field

    with pytest.raises(Skipped) as err:
        choose_field(["title", "url"], None)
    said = studio_words(str(err.value))
    assert "--field" not in said and "text, content or body" in said and "title, url" in said


def test_ordinary_words_are_left_alone():
    assert studio_words("the schedule is cosine; seed 3") == "The schedule is cosine; seed 3"
    assert studio_words("") == ""
