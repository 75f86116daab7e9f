"""The OpenAI-compatible HTTP API over the models folder (FastAPI on uvicorn).

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/completions``,
``POST /v1/chat/completions`` (each with ``"stream": true`` as server-sent events in OpenAI's
chunk format) and ``GET /health``. Errors have OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``: 400 for a bad request, 401 without the API
key (when one is set), 404 for an unknown model or path, 413 for a body over the size limit.

Request handling never runs model code on the event loop: loading happens in a thread, and
generation on the model's worker thread (cllm.serve.pool), which hands text pieces back through
``loop.call_soon_threadsafe``. A client that disconnects sets its job's cancel event, so its
generation stops at the next token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cllm.engine.chat import MAX_STOPS, Sampling, chat, complete
from cllm.errors import CLLMError, NotFoundError, ValidationError
from cllm.serve.pool import Job, ModelPool

MAX_BODY = 1 << 20  # bytes of JSON in a request
MAX_TOKENS_LIMIT = 2048  # max_tokens a request may ask for
DEFAULT_MAX_TOKENS = {"completion": 16, "chat": 256}  # OpenAI's 16 for completions


@dataclass
class Limits:
    max_body: int = MAX_BODY
    max_tokens: int = MAX_TOKENS_LIMIT


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(message: str, kind: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error_response(err: APIError) -> JSONResponse:
    kind = {401: "authentication_error", 404: "invalid_request_error"}.get(
        err.status, "invalid_request_error" if err.status < 500 else "server_error"
    )
    return JSONResponse(error_body(err.message, kind, err.param, err.code), status_code=err.status)


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.completion_tokens = 0
        self.active = 0
        self.lock = threading.Lock()


def create_app(registry, api_key: str | None = None, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    pool = ModelPool(registry)
    stats = Stats()
    app = FastAPI(title="Crystalline CLLM", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pool, app.state.stats = pool, stats

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            want = f"Bearer {api_key}"
            if not hmac.compare_digest(given.encode(), want.encode()):
                return _error_response(
                    APIError(401, "Incorrect or missing API key", code="invalid_api_key")
                )
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body):
            return _error_response(
                APIError(413, f"request body over {limits.max_body} bytes", code="too_large")
            )
        return await call_next(request)

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError):
        return _error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return _error_response(APIError(err.status_code, str(err.detail)))

    @app.get("/health")
    async def health():
        return {"status": "ok", "models_loaded": len(pool.loaded()), "requests": stats.requests}

    @app.get("/v1/models")
    async def list_models():
        infos = await asyncio.to_thread(_model_cards, registry)
        return {"object": "list", "data": infos}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        for card in await asyncio.to_thread(_model_cards, registry):
            if card["id"] == model_id:
                return card
        raise _not_found(model_id)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _json_body(request, limits)
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise APIError(400, "prompt must be a string (one prompt per request)", "prompt")
        for key, fine in (("echo", (None, False)), ("logprobs", (None,)), ("suffix", (None, ""))):
            if body.get(key) not in fine:
                raise APIError(400, f"{key} is not supported", key)
        if body.get("best_of") not in (None, 1):
            raise APIError(400, "only best_of=1 is supported", "best_of")
        sampling = _sampling(body, limits, "completion")

        def make(lm, cancel):
            return complete(lm.gpt, lm.tokenizer, prompt, sampling, cancel)

        return await _respond(request, body, make, "completion", pool, stats)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _json_body(request, limits)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "messages must be a non-empty list", "messages")
        msgs = [_message(m, i) for i, m in enumerate(messages)]
        sampling = _sampling(body, limits, "chat")

        def make(lm, cancel):
            ctx, gen = chat(lm.gpt, lm.tokenizer, msgs, sampling, cancel)
            gen.dropped = ctx.dropped
            return gen

        return await _respond(request, body, make, "chat", pool, stats)

    return app


def _model_cards(registry) -> list[dict]:
    out = []
    for name in registry.names():
        try:
            created = int(registry.path(name).stat().st_mtime)
        except OSError:
            continue
        out.append({"id": name, "object": "model", "created": created, "owned_by": "cllm"})
    return out


def _not_found(model) -> APIError:
    return APIError(404, f"The model {model!r} does not exist", "model", code="model_not_found")


async def _json_body(request: Request, limits: Limits) -> dict:
    raw = bytearray()
    async for chunk in request.stream():  # a body sent without a length is counted too
        raw += chunk
        if len(raw) > limits.max_body:
            raise APIError(413, f"request body over {limits.max_body} bytes", code="too_large")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise APIError(400, "model is required", "model")
    return body


def _message(m, i: int) -> dict:
    if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
        raise APIError(400, f"messages[{i}] needs a role of system, user or assistant", "messages")
    content = m.get("content")
    if isinstance(content, list):  # content parts: text only
        parts = []
        for p in content:
            if (
                not isinstance(p, dict)
                or p.get("type") != "text"
                or not isinstance(p.get("text"), str)
            ):
                raise APIError(400, f"messages[{i}]: only text content is supported", "messages")
            parts.append(p["text"])
        content = "".join(parts)
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise APIError(400, f"messages[{i}].content must be a string", "messages")
    role = "system" if m["role"] == "developer" else m["role"]
    return {"role": role, "content": content}


def _sampling(body: dict, limits: Limits, kind: str) -> Sampling:
    def get(key, default):
        v = body.get(key)
        return default if v is None else v

    n = body.get("n")
    if n not in (None, 1):
        raise APIError(400, "only n=1 is supported", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = min(DEFAULT_MAX_TOKENS[kind], limits.max_tokens)
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        if max_tokens > limits.max_tokens:
            raise APIError(
                400,
                f"max_tokens is {max_tokens}; this server allows {limits.max_tokens}",
                "max_tokens",
            )
    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list) and len(stop) <= MAX_STOPS:
        stop = tuple(stop)
    else:
        raise APIError(400, f"stop must be a string or a list of up to {MAX_STOPS}", "stop")
    try:
        return Sampling(
            max_tokens=max_tokens,
            temperature=get("temperature", 1.0),
            top_k=get("top_k", 0),
            top_p=get("top_p", 1.0),
            repetition_penalty=get("repetition_penalty", 1.0),
            seed=body.get("seed"),
            stop=stop,
        ).check()
    except CLLMError as err:
        raise APIError(400, str(err)) from None


async def _respond(request: Request, body: dict, make, kind: str, pool: ModelPool, stats: Stats):
    try:
        worker = await asyncio.to_thread(pool.get, body["model"])
    except (NotFoundError, ValidationError):  # no such model, or a name no model can have
        raise _not_found(body["model"]) from None
    except CLLMError as err:  # a broken model file
        raise APIError(400, str(err), "model") from None
    reply = _Reply(kind, worker.name, body, stats)
    with stats.lock:
        stats.requests += 1
    worker.submit(reply.job(make))
    if not reply.stream:
        return await reply.whole(request)
    return StreamingResponse(
        reply.events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _Reply:
    """One request's generation: the model's worker thread puts its text pieces on an asyncio
    queue; ``whole`` answers with all of it, ``events`` streams it as OpenAI's chunks."""

    def __init__(self, kind: str, model: str, body: dict, stats: Stats) -> None:
        self.kind, self.model, self.stats = kind, model, stats
        self.loop = asyncio.get_running_loop()
        self.pieces: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()
        self.holder: dict = {}  # "gen": the Generation, once the worker made it
        self.id = ("cmpl-" if kind == "completion" else "chatcmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.stream = bool(body.get("stream"))
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def job(self, make) -> Job:
        def build(lm):
            self.holder["gen"] = gen = make(lm, self.cancel)
            return gen

        def emit(piece: str) -> None:
            self.loop.call_soon_threadsafe(self.pieces.put_nowait, piece)

        def finish(err: BaseException | None) -> None:
            self.loop.call_soon_threadsafe(self.pieces.put_nowait, _Done(err))

        return Job(build, emit, finish, self.cancel)

    def usage(self) -> dict:
        gen = self.holder.get("gen")
        p, c = (gen.prompt_tokens, gen.completion_tokens) if gen else (0, 0)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def finish_reason(self) -> str:
        reason = getattr(self.holder.get("gen"), "finish_reason", None)
        return "length" if reason == "length" else "stop"

    def count(self) -> None:
        gen = self.holder.get("gen")
        with self.stats.lock:
            self.stats.completion_tokens += gen.completion_tokens if gen else 0

    async def whole(self, request: Request):
        try:
            text = []
            while True:
                try:
                    item = await asyncio.wait_for(self.pieces.get(), 0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        self.cancel.set()
                        return JSONResponse({}, status_code=499)
                    continue
                if isinstance(item, _Done):
                    break
                text.append(item)
        finally:
            self.cancel.set()  # a no-op once done; stops the job if this handler was cancelled
        if item.err is not None:
            raise _as_api_error(item.err)
        self.count()
        out = "".join(text)
        if self.kind == "completion":
            choice = {
                "text": out,
                "index": 0,
                "logprobs": None,
                "finish_reason": self.finish_reason(),
            }
            obj = "text_completion"
        else:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": out},
                "logprobs": None,
                "finish_reason": self.finish_reason(),
            }
            obj = "chat.completion"
        return JSONResponse(
            {
                "id": self.id,
                "object": obj,
                "created": self.created,
                "model": self.model,
                "choices": [choice],
                "usage": self.usage(),
            },
            headers=_dropped_header(self.holder),
        )

    @property
    def _chunk_object(self) -> str:
        return "text_completion" if self.kind == "completion" else "chat.completion.chunk"

    def chunk(self, text: str | None, reason: str | None, first: bool = False) -> str:
        if self.kind == "completion":
            choice = {"text": text or "", "index": 0, "logprobs": None, "finish_reason": reason}
        else:
            delta = {} if text is None else {"content": text}
            if first:
                delta = {"role": "assistant", "content": ""}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        d = {
            "id": self.id,
            "object": self._chunk_object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if self.include_usage:
            d["usage"] = None
        return f"data: {json.dumps(d, ensure_ascii=False)}\n\n"

    async def events(self):
        pieces = self.pieces
        try:
            if self.kind == "chat":
                yield self.chunk(None, None, first=True)
            while True:
                item = await pieces.get()
                if isinstance(item, _Done):
                    break
                text = [item]
                while not pieces.empty():  # pieces that queued up while we sent: one chunk
                    nxt = pieces.get_nowait()
                    if isinstance(nxt, _Done):
                        pieces.put_nowait(nxt)
                        break
                    text.append(nxt)
                yield self.chunk("".join(text), None)
            if item.err is not None:
                err = _as_api_error(item.err)
                body = error_body(err.message, "invalid_request_error", err.param, err.code)
                yield f"data: {json.dumps(body)}\n\n"
                return
            self.count()
            yield self.chunk(None if self.kind == "chat" else "", self.finish_reason())
            if self.include_usage:
                d = {
                    "id": self.id,
                    "object": self._chunk_object,
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": self.usage(),
                }
                yield f"data: {json.dumps(d)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self.cancel.set()  # the client went away (or we are done): stop generating


def _dropped_header(holder: dict) -> dict:
    dropped = getattr(holder.get("gen"), "dropped", None)
    return {} if dropped is None else {"X-Cllm-Dropped-Messages": str(dropped)}


class _Done:
    def __init__(self, err: BaseException | None) -> None:
        self.err = err


def _as_api_error(err: BaseException) -> APIError:
    if isinstance(err, CLLMError):
        return APIError(400, str(err))
    return APIError(500, f"{type(err).__name__}: {err}")
