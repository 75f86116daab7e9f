import io

import pytest

from cllm.cli import main
from cllm.engine.config import GPTConfig
from cllm.engine.lm import LanguageModel
from cllm.engine.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    tok = train_tokenizer("char", "hello world é\n", 300)
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_embd=16, n_layer=1, n_head=2, block_size=32)
    lm = LanguageModel.create(cfg, tok, "tiny_1", seed=1)
    lm.save(folder / "tiny_1.cllm")
    (folder / "broken.cllm").write_bytes(b"not a model file at all")
    return folder, lm


def test_generate_prints_the_stream(models, capsys):
    folder, lm = models
    args = ["generate", "tiny_1", "hello", "--models-dir", str(folder), "--max-tokens", "25"]
    args += ["--temperature", "0.9", "--top-k", "10", "--top-p", "0.95", "--seed", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    want = "".join(
        lm.generate("hello", max_tokens=25, temperature=0.9, top_k=10, top_p=0.95, seed=5)
    )
    assert out == want + "\n"


def test_generate_flushes_each_piece(models, monkeypatch):
    folder, _ = models

    class Out(io.StringIO):
        encoding = "utf-8"
        flushes = 0

        def flush(self):
            Out.flushes += 1

    out = Out()
    monkeypatch.setattr("sys.stdout", out)
    assert (
        main(
            [
                "generate",
                "tiny_1",
                "he",
                "--models-dir",
                str(folder),
                "--max-tokens",
                "10",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    assert Out.flushes >= 2  # streamed piece by piece, not printed at the end


def test_models_dir_from_environment(models, monkeypatch, capsys):
    folder, _ = models
    monkeypatch.setenv("CLLM_MODELS_DIR", str(folder))
    assert main(["generate", "tiny_1", "h", "--max-tokens", "3", "--seed", "1"]) == 0
    assert capsys.readouterr().out.endswith("\n")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "nope", "hi"], "no model named 'nope'"),
        (["generate", "../tiny_1", "hi"], "name"),
        (["generate", "CON", "hi"], "reserved"),
        (["generate", "broken", "hi"], "broken.cllm"),
        (["generate", "tiny_1", "hi", "--temperature", "-1"], "temperature"),
        (["generate", "tiny_1", "hi", "--top-p", "0"], "top-p"),
        (["generate", "tiny_1", "hi", "--max-tokens", "0"], "max tokens"),
        (["generate", "tiny_1", "a\udcff"], "surrogate"),
    ],
)
def test_refusals_are_one_line(models, capsys, argv, message):
    folder, _ = models
    assert main([*argv, "--models-dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_option_value_exits_2(models, capsys):
    folder, _ = models
    with pytest.raises(SystemExit) as exc:
        main(["generate", "tiny_1", "hi", "--max-tokens", "many", "--models-dir", str(folder)])
    assert exc.value.code == 2


def test_generate_stop_preset_and_repetition_penalty(models, capsys):
    from cllm.engine.chat import PRESETS, Sampling, complete

    folder, lm = models
    base = ["generate", "tiny_1", "hello", "--models-dir", str(folder), "--max-tokens", "30"]
    assert main([*base, "--temperature", "0"]) == 0
    free = capsys.readouterr().out[:-1]
    stop = free[4:6]
    assert main([*base, "--temperature", "0", "--stop", stop]) == 0
    assert capsys.readouterr().out == free[: free.find(stop)] + "\n"
    assert main([*base, "--preset", "creative", "--top-k", "7", "--seed", "3"]) == 0
    want = complete(
        lm.gpt,
        lm.tokenizer,
        "hello",
        Sampling(30, seed=3, **{**PRESETS["creative"], "top_k": 7}),
    ).run()
    assert capsys.readouterr().out == want + "\n"
    assert main([*base, "--repetition-penalty", "0"]) == 2
    assert "repetition penalty" in capsys.readouterr().err


def test_chat_reads_messages_from_stdin_and_keeps_the_conversation(models, capsys, monkeypatch):
    import io as _io

    from cllm.engine.chat import Sampling, chat

    folder, lm = models
    monkeypatch.setattr("sys.stdin", _io.StringIO("hello\n/retry\nworld\n"))
    args = ["chat", "tiny_1", "--models-dir", str(folder), "--max-tokens", "8", "--seed", "4"]
    assert main([*args, "--system", "Be brief."]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 3 and all(line.startswith("tiny_1> ") for line in lines)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    first = chat(lm.gpt, lm.tokenizer, msgs, Sampling(8, seed=4, temperature=0.8))[1].run()
    again = chat(lm.gpt, lm.tokenizer, msgs, Sampling(8, seed=5, temperature=0.8))[1].run()
    assert out.startswith(f"tiny_1> {first}\ntiny_1> {again}\n")
    msgs += [{"role": "assistant", "content": again}, {"role": "user", "content": "world"}]
    third = chat(lm.gpt, lm.tokenizer, msgs, Sampling(8, seed=6, temperature=0.8))[1].run()
    assert out.endswith(f"tiny_1> {third}\n")


def test_serve_refuses_bad_settings(models, capsys):
    folder, _ = models
    assert main(["serve", "--port", "70000", "--models-dir", str(folder)]) == 2
    assert "port" in capsys.readouterr().err
    assert main(["serve", "--max-tokens-limit", "0", "--models-dir", str(folder)]) == 2
