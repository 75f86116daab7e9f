"""Training: the background trainer and `python -m cllm.train`."""
