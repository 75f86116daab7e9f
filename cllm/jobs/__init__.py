"""Batch training: a persistent job queue in the models folder and the scheduler that runs it.

- ``cllm.jobs.store``: ``JobStore`` (``jobs.sqlite``, SQLite in WAL mode): jobs and their states.
- ``cllm.jobs.scheduler``: ``Scheduler``: runs queued jobs, each in its own process.
- ``cllm.jobs.worker``: the process that trains one job (``python -m cllm.jobs.worker``).
- ``cllm.jobs.sweep``: copies of a model over a grid of settings, each with a job; the report.
- ``cllm.jobs.ray_runner``: the same jobs as Ray tasks on a cluster (optional ``ray``).
"""
