"""`cllm serve`: an OpenAI-compatible HTTP server over the models folder (needs the ``serve``
extra: FastAPI and uvicorn)."""
