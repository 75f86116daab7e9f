"""Data: text extraction from files, the per-model data queue, the batch accumulator and the
demo corpus."""
