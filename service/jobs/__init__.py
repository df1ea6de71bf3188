"""Asynchronous jobs (POST /v1/jobs): a store that keeps accepted work, and ``JobRunner`` threads that run it.

``open_job_store`` picks the store from the ``job_store`` setting: a SQLite file (a path or
``sqlite:///path``, the default; one process per file) or Redis (``redis://`` / ``rediss://``;
several replicas may share it). Both keep the image and options from acceptance on, so that a job
survives a restart, and both hand each job to one worker at a time.
"""

from __future__ import annotations

from service.jobs.job import Job, JobStore, JobStoreError
from service.jobs.runner import JobRunner
from service.jobs.sqlite_store import SQLiteJobStore

REDIS_SCHEMES = ("redis://", "rediss://")

__all__ = ["Job", "JobRunner", "JobStore", "JobStoreError", "SQLiteJobStore", "open_job_store", "store_outage_errors"]


def store_outage_errors() -> tuple[type[Exception], ...]:
    """What a store raises while it cannot be reached or written (a locked or full disk, Redis down):
    the request that met it is answered 503, to be retried, not 500."""
    import sqlite3

    outages: tuple[type[Exception], ...] = (sqlite3.OperationalError,)
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError
    except ImportError:
        return outages
    return outages + (RedisConnectionError, RedisTimeoutError)


def open_job_store(url: str, max_queued: int, lease_s: float) -> JobStore:
    """The store ``url`` names, with jobs left unfinished by a dead process queued again; raises JobStoreError."""
    if url.startswith(REDIS_SCHEMES):
        # Imported here so that a SQLite deployment runs without redis-py installed.
        from service.jobs.redis_store import RedisJobStore

        return RedisJobStore.open(url, max_queued, lease_s)
    return SQLiteJobStore.open(url, max_queued)
