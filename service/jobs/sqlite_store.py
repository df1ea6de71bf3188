"""The job store in one SQLite file (the default): ``SQLiteJobStore``.

Everything a job needs (image bytes, options) is written at acceptance, so that a job survives a
restart; jobs a previous process left ``queued`` or ``running`` are queued again when the store
opens. One process owns a store file: two live processes on one file would re-queue each other's
running jobs (several replicas share a Redis store instead).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from service.jobs.job import Job, JobStoreError
from service.schemas import JobStatus, Options

log = logging.getLogger("service.jobs")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    filename TEXT,
    options TEXT NOT NULL,
    image BLOB,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    media_type TEXT,
    result BLOB,
    problem TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
"""
COLUMNS = "id, status, filename, options, created_at, started_at, finished_at, media_type, problem"


def job_from_row(row: sqlite3.Row) -> Job:
    return Job(id=row["id"], status=JobStatus(row["status"]), filename=row["filename"],
               options=Options.model_validate_json(row["options"]), created_at=row["created_at"],
               started_at=row["started_at"], finished_at=row["finished_at"], media_type=row["media_type"],
               problem=json.loads(row["problem"]) if row["problem"] else None)


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative/jobs.db``, ``sqlite:////absolute/jobs.db`` or a plain path."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if "://" in url:
        raise JobStoreError(f"job_store {url!r}: not a SQLite path (sqlite:///path or a plain path) nor a Redis URL")
    return Path(url)


class SQLiteJobStore:
    """Jobs in one SQLite file; one connection shared by the event loop and the workers, under a lock."""

    def __init__(self, path: Path, max_queued: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_queued = max_queued
        self._lock = threading.Lock()
        self.added = threading.Event()  # set on each submission, so that idle workers start at once
        # isolation_level=None: autocommit, each statement is its own transaction.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an accepted job is on disk before the 202 goes out
        self._db.executescript(SCHEMA)

    @classmethod
    def open(cls, url: str, max_queued: int) -> SQLiteJobStore:
        try:
            store = cls(sqlite_path(url), max_queued)
        except (OSError, sqlite3.Error) as error:
            raise JobStoreError(str(error)) from error
        waiting = store.requeue_unfinished()
        if waiting:
            log.info("%d job(s) from a previous process queued again", waiting)
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def submit(self, image: bytes, options: Options, filename: str | None) -> Job | None:
        """The job, queued and on disk; None when ``max_queued`` jobs already wait."""
        job = Job(id=uuid.uuid4().hex, status=JobStatus.queued, filename=filename, options=options,
                  created_at=time.time())
        with self._lock:
            # The count and the insert in one statement, so that concurrent submissions cannot overshoot.
            inserted = self._db.execute(
                "INSERT INTO jobs (id, status, filename, options, image, created_at) "
                "SELECT ?, 'queued', ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM jobs WHERE status = 'queued') < ?",
                (job.id, filename, options.model_dump_json(), image, job.created_at, self.max_queued),
            ).rowcount
        if inserted:
            self.added.set()
        return job if inserted else None

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return job_from_row(row) if row else None

    def queued(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]

    def result(self, job_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["result"] if row else None

    def claim(self) -> tuple[Job, bytes] | None:
        """The oldest queued job, now marked running, with its image; None when none waits."""
        with self._lock:
            row = self._db.execute(
                "UPDATE jobs SET status = 'running', started_at = ? WHERE id = "
                "(SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1) "
                f"RETURNING {COLUMNS}, image", (time.time(),)).fetchone()
        return (job_from_row(row), row["image"]) if row else None

    def succeed(self, job_id: str, body: bytes, media_type: str) -> None:
        # The image is no longer needed once the job has finished; dropping it keeps the file small.
        self._finish(job_id, JobStatus.succeeded, result=body, media_type=media_type)

    def fail(self, job_id: str, problem: dict) -> None:
        self._finish(job_id, JobStatus.failed, problem=json.dumps(problem))

    def _finish(self, job_id: str, status: JobStatus, result: bytes | None = None, media_type: str | None = None,
                problem: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, result = ?, media_type = ?, problem = ?, image = NULL "
                "WHERE id = ?", (status.value, time.time(), result, media_type, problem, job_id))

    def requeue_unfinished(self) -> int:
        """Jobs a previous process left running go back to the queue; returns how many now wait."""
        with self._lock:
            self._db.execute("UPDATE jobs SET status = 'queued', started_at = NULL WHERE status = 'running'")
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
