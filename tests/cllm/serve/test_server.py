"""`cllm serve` with the official `openai` package as the client, on 127.0.0.1 (a free port)."""

from __future__ import annotations

import http.client
import json
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.engine.chat import Sampling, chat, complete
from cllm.engine.config import GPTConfig
from cllm.models.registry import Registry

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from cllm.serve.app import Limits  # noqa: E402
from cllm.serve.server import Server  # noqa: E402

KEY = "test-key"
CFG = GPTConfig(vocab_size=257, n_embd=32, n_layer=2, n_head=2, block_size=128)


def raw(srv, method, path, body=None, key=KEY, headers=None):
    """A request without the openai client: (status, JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    h = {"Content-Type": "application/json", **(headers or {})}
    if key:
        h["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    out = r.status, json.loads(r.read() or b"null")
    conn.close()
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("models"))
    reg.create("m", config=CFG, tokenizer="byte", text="hello world")
    reg.create("other", config=CFG, tokenizer="byte", text="hello world", seed=1)
    srv = Server(reg, port=0, api_key=KEY, limits=Limits(max_tokens=100_000)).start()
    yield reg, srv
    srv.stop()


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served[1].url, api_key=KEY, max_retries=0, timeout=60)


def test_binds_loopback_and_lists_models(served, client):
    reg, srv = served
    assert srv.url.startswith("http://127.0.0.1:")
    assert sorted(m.id for m in client.models.list()) == ["m", "other"]
    assert client.models.retrieve("m").id == "m"
    status, body = raw(srv, "GET", "/health")
    assert status == 200 and body["status"] == "ok"


def test_completion_matches_the_engine_with_usage(served, client):
    reg, _ = served
    lm = reg.load("m")
    r = client.completions.create(model="m", prompt="Hello", max_tokens=12, seed=3, top_p=0.9)
    want = complete(lm.gpt, lm.tokenizer, "Hello", Sampling(12, 1.0, 0, 0.9, 1.0, 3)).run()
    assert r.choices[0].text == want and r.object == "text_completion"
    assert r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 12
    assert r.usage.total_tokens == 17 and r.choices[0].finish_reason == "length"


def test_chat_and_streaming_equal_the_plain_reply(served, client):
    reg, _ = served
    lm = reg.load("m")
    msgs = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi there"}]
    args = dict(model="m", messages=msgs, max_tokens=40, seed=11, temperature=0.9)
    r = client.chat.completions.create(**args, extra_body={"top_k": 40, "repetition_penalty": 1.2})
    want = chat(lm.gpt, lm.tokenizer, msgs, Sampling(40, 0.9, 40, 1.0, 1.2, 11))[1].run()
    assert r.choices[0].message.content == want and r.choices[0].message.role == "assistant"
    s = client.chat.completions.create(
        **args,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"top_k": 40, "repetition_penalty": 1.2},
    )
    chunks = list(s)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[
        0
    ].finish_reason
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert all(c.object == "chat.completion.chunk" for c in chunks)

    s = client.completions.create(model="m", prompt="Once", max_tokens=30, seed=2, stream=True)
    text = "".join(c.choices[0].text for c in s)
    assert (
        text
        == client.completions.create(model="m", prompt="Once", max_tokens=30, seed=2)
        .choices[0]
        .text
    )


def test_stop_sequences(served, client):
    free = client.completions.create(model="m", prompt="ab", max_tokens=60, temperature=0)
    text = free.choices[0].text
    stop = text[10:13]
    cut = text.find(stop)
    for stream in (False, True):
        r = client.completions.create(
            model="m",
            prompt="ab",
            max_tokens=60,
            temperature=0,
            stop=[stop, "\x00never"],
            stream=stream,
        )
        got = "".join(c.choices[0].text for c in r) if stream else r.choices[0].text
        assert got == text[:cut]
    r = client.completions.create(model="m", prompt="ab", max_tokens=60, temperature=0, stop=stop)
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens < 60


def test_errors_have_openai_shape(served, client):
    _, srv = served
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=srv.url, api_key="wrong", max_retries=0).models.list()
    assert e.value.status_code == 401
    status, body = raw(srv, "POST", "/v1/completions", {"model": "m", "prompt": "x"}, key=None)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert raw(srv, "GET", "/health", key=None)[0] == 401
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="x")
    assert e.value.body["code"] == "model_not_found" and e.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="../m", messages=[{"role": "user", "content": "x"}])
    bad = [
        dict(max_tokens=200_000),
        dict(temperature=-1),
        dict(n=2),
        dict(stop=["a"] * 5),
        dict(extra_body={"repetition_penalty": 0}),
        dict(extra_body={"top_k": -1}),
    ]
    for kw in bad:
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model="m", prompt="x", **kw)
        assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "wizard", "content": "x"}])
    status, body = raw(srv, "POST", "/v1/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = raw(srv, "POST", "/v1/completions", b"x" * (2 << 20))
    assert status == 413 and "error" in body
    status, body = raw(srv, "GET", "/nothing")
    assert status == 404 and "error" in body


def _worker(srv, name="m"):
    return srv.app.state.pool.loaded()[name]


def test_client_disconnect_stops_generation(served):
    _, srv = served
    body = {"model": "other", "prompt": "x", "max_tokens": 100_000, "stream": True}
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request(
        "POST",
        "/v1/completions",
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    r = conn.getresponse()
    got = [r.fp.readline() for _ in range(6)]
    assert r.status == 200 and any(line.startswith(b"data: ") for line in got)
    conn.sock.close()  # the client goes away mid-stream
    conn.close()
    w = _worker(srv, "other")
    end = time.monotonic() + 5
    while w.busy and time.monotonic() < end:
        time.sleep(0.01)
    assert w.busy == 0  # 100,000 tokens would take minutes; it stopped when the client left


def test_eight_concurrent_streams_all_complete(served, client):
    _, srv = served
    results, errors = {}, []
    n_tok = 48

    def one(i):
        try:
            s = client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": f"client {i}"}],
                max_tokens=n_tok,
                seed=i,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"stop": None},
            )
            chunks = list(s)
            results[i] = (
                "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                chunks[-1].usage.completion_tokens,
            )
        except Exception as err:  # reported below
            errors.append(err)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    dt = time.perf_counter() - t0
    assert not errors and len(results) == 8
    tokens = sum(n for _, n in results.values())
    print(
        f"\n8 concurrent streams: {tokens} tokens in {dt:.2f}s = {tokens / dt:.0f} tok/s aggregate"
    )
    # each stream is what it would be alone
    for i in (0, 5):
        alone = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": f"client {i}"}],
            max_tokens=n_tok,
            seed=i,
        )
        assert alone.choices[0].message.content == results[i][0]


def test_a_model_saved_anew_is_reloaded(served, client):
    reg, srv = served
    before = client.completions.create(model="other", prompt="Hi", max_tokens=20, temperature=0)
    lm = reg.load("other")
    lm.gpt.params[:] = np.random.default_rng(9).standard_normal(lm.gpt.params.size) * 0.1
    lm.save(reg.path("other"))  # as a trainer's checkpoint lands
    reloads = srv.app.state.pool.reloads
    after = client.completions.create(model="other", prompt="Hi", max_tokens=20, temperature=0)
    want = complete(lm.gpt, lm.tokenizer, "Hi", Sampling(20, 0.0)).run()
    assert after.choices[0].text == want != before.choices[0].text
    assert srv.app.state.pool.reloads == reloads + 1
    assert srv.requests >= 2


def test_bench_serve_prints_its_json_line(capsys):
    from cllm.cli import main

    args = ["bench", "serve", "--streams", "1", "2", "--max-tokens", "4", "--prompt-tokens", "4"]
    assert main(args) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["bench"] == "serve" and [r["streams"] for r in d["runs"]] == [1, 2]
    assert all(r["tokens"] > 0 and r["tokens_per_s"] > 0 for r in d["runs"])
    assert d["isa"] and d["config"]["n_layer"] == 4


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=10,
)
FIELDS = st.sampled_from(
    ["max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "stop", "n"]
)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(FIELDS, JSON, max_size=6))
def test_request_fields_are_checked_or_refused_with_400(body):
    """Any JSON in the sampling fields gives checked settings or a 400, never a crash."""
    from cllm.serve.app import APIError, _sampling

    try:
        s = _sampling(body, Limits(max_tokens=500), "chat")
    except APIError as err:
        assert err.status == 400 and err.message
        return
    assert 1 <= s.max_tokens <= 500 and 0 < s.top_p <= 1 and len(s.stop) <= 4


def test_cllm_serve_command_serves_until_interrupted(served):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    reg, _ = served
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "cllm", "serve", "--port", "0", "--models-dir", str(reg.dir)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert line.startswith("serving ") and "http://127.0.0.1:" in line, p.stderr.read()
        url = line.split(" at ")[1].split()[0]
        assert _niced_child(p.pid), "the decoding kernels are not compiled ahead (engine.warm)"
        with openai.OpenAI(base_url=url, api_key="none", max_retries=0) as client:
            assert sorted(m.id for m in client.models.list()) == ["m", "other"]
        p.send_signal(signal.SIGINT)
        # communicate, not wait: it drains stderr, so a chatty shutdown can never fill the pipe
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # every thread's stack, for whoever reads the failure
            p.send_signal(signal.SIGABRT)
            _, err = p.communicate(timeout=30)
            raise AssertionError(f"cllm serve did not stop on SIGINT:\n{err[-6000:]}") from None
        assert p.returncode == 0, err[-2000:]
    finally:
        if p.poll() is None:
            p.kill()


def _niced_child(pid: int, timeout: float = 10.0) -> bool:
    """Whether process pid starts a child at nice 10 or more within timeout (cllm.engine.warm's
    compile ahead: it lives for a second or more, importing numba)."""
    import time

    import psutil

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if any(c.nice() >= 10 for c in psutil.Process(pid).children()):
                return True
        except psutil.Error:  # a child that ended between the listing and the question
            pass
        time.sleep(0.02)
    return False

