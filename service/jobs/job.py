"""A job as the routes and the runner see it, and the interface every job store offers."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from service.schemas import JobInfo, JobStatus, Options


class JobStoreError(Exception):
    """The store cannot be opened (bad URL, unwritable file, unreachable Redis)."""


@dataclass
class Job:
    id: str
    status: JobStatus
    filename: str | None
    options: Options
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    media_type: str | None = None
    problem: dict | None = None

    def info(self) -> JobInfo:
        def when(ts: float | None) -> datetime | None:
            return datetime.fromtimestamp(ts, timezone.utc) if ts is not None else None

        done = self.status is JobStatus.succeeded
        return JobInfo(id=self.id, status=self.status, filename=self.filename, options=self.options,
                       created_at=when(self.created_at), started_at=when(self.started_at),
                       finished_at=when(self.finished_at), result_url=f"/v1/jobs/{self.id}/result" if done else None,
                       media_type=self.media_type, problem=self.problem)


class JobStore(Protocol):
    """What the routes and ``JobRunner`` use; ``SQLiteJobStore`` and ``RedisJobStore`` implement it.

    Methods block (disk or network): the routes call them off the event loop.
    """

    max_queued: int
    added: threading.Event  # set on each submission through this store, so that idle local workers start at once

    def submit(self, image: bytes, options: Options, filename: str | None) -> Job | None:
        """The job, queued and stored; None when ``max_queued`` jobs already wait."""

    def get(self, job_id: str) -> Job | None: ...

    def queued(self) -> int:
        """How many jobs wait to run (in the whole store: all replicas' on Redis)."""

    def result(self, job_id: str) -> bytes | None: ...

    def claim(self) -> tuple[Job, bytes] | None:
        """The oldest queued job, now running and held by this store's process, with its image."""

    def succeed(self, job_id: str, body: bytes, media_type: str) -> None: ...

    def fail(self, job_id: str, problem: dict) -> None: ...

    def close(self) -> None: ...
