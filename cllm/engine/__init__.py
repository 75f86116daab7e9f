"""The engine: the GPT-2 model, its numba kernels, the optimizer, tokenizers, the model file,
generation and Hugging Face interop.

It imports nothing from the models folder, the training system or the crawler
(tests/cllm/test_layout.py holds it to that)."""
