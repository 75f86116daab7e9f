"""Run the API with uvicorn: in the foreground (``cllm serve``) or on a background thread (the
studio, tests), on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import threading
import time

from cllm.errors import CLLMError, ValidationError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _require():
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise CLLMError(
            "serving needs FastAPI and uvicorn: pip install 'crystalline-cllm[serve]'"
        ) from None
    return uvicorn


class Server:
    """``start()`` binds and serves on a thread; ``url``, ``requests`` and ``stop()``."""

    def __init__(
        self,
        registry,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        limits=None,
    ) -> None:
        uvicorn = _require()
        from cllm.serve.app import create_app

        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValidationError(f"port must be from 0 to 65535, got {port!r}")
        if api_key is not None and not api_key.strip():
            raise ValidationError("the API key is empty")
        self.host = host
        self.app = create_app(registry, api_key=api_key, limits=limits)
        config = uvicorn.Config(
            self.app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", None) or []
        for s in servers:
            for sock in s.sockets:
                return sock.getsockname()[1]
        return self._server.config.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def requests(self) -> int:
        return self.app.state.stats.requests

    def start(self, timeout: float = 30.0) -> Server:
        def run() -> None:
            try:
                self._server.run()
            except BaseException as err:  # a port in use ends up here (uvicorn exits)
                self.error = err

        self._thread = threading.Thread(target=run, name="cllm-serve", daemon=True)
        self._thread.start()
        end = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                raise CLLMError(
                    f"the server could not start on {self.host}:{self._server.config.port}"
                    + (f" ({self.error})" if self.error else " (is the port in use?)")
                )
            time.sleep(0.02)
        return self

    def serve_forever(self) -> None:
        self._server.run()
        if not self._server.started:
            raise CLLMError(
                f"the server could not start on {self.host}:{self._server.config.port} "
                "(is the port in use?)"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: uvicorn closes its sockets and lets requests in flight finish for up to
        ``timeout`` seconds, then drops what is left (force_exit), so a stop always ends."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(5.0)
        self.app.state.pool.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._server.started
