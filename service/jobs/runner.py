"""``JobRunner``: worker threads that take jobs from a store and run them through the engine."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from service import errors
from service.jobs.job import Job, JobStore

log = logging.getLogger("service.jobs")


class JobRunner:
    """``workers`` threads that take queued jobs and run them through the engine once it has loaded.

    The engine arrives through ``get_engine`` (None while loading), so jobs accepted before the model
    is ready simply wait.
    """

    def __init__(self, store: JobStore, get_engine: Callable[[], object | None], workers: int, poll_s: float):
        self.store, self.get_engine, self.poll_s = store, get_engine, poll_s
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name=f"job-worker-{i}", daemon=True)
                         for i in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float) -> None:
        """Let running jobs finish within ``timeout_s``; the store re-queues the rest.

        SQLite re-queues them at its next open, Redis when the store closes.
        """
        self._stop.set()
        self.store.added.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while not self._stop.is_set():
            engine = self.get_engine()
            try:
                claimed = self.store.claim() if engine is not None else None
                if claimed is not None:
                    self._run(engine, *claimed)
                    continue
            except Exception:  # noqa: BLE001 - e.g. Redis unreachable for a while: keep the worker alive
                log.exception("job store error; retrying in %.1f s", self.poll_s)
            # Woken by a submission; the timeout also covers the engine finishing its load, submissions
            # made through other replicas of a shared store and a store that was briefly unreachable.
            self.store.added.wait(self.poll_s)
            self.store.added.clear()

    def _run(self, engine, job: Job, image: bytes) -> None:
        instance = f"/v1/jobs/{job.id}"
        try:
            out = engine.reconstruct(image, job.options)
        except errors.Problem as problem:
            self.store.fail(job.id, problem.document(instance))
        except Exception:  # noqa: BLE001 - a job must end failed, not stay running forever
            log.exception("job %s failed", job.id)
            self.store.fail(job.id, errors.Problem(500, "internal-error", "Internal error",
                                                   "an unexpected error occurred; it has been logged")
                            .document(instance))
        else:
            self.store.succeed(job.id, out.body, out.media_type)
