"""Dynamic micro-batching: concurrent requests' ONNX inputs run together in one call.

A single worker thread takes the first waiting item, waits up to ``max_delay`` for more until
``max_batch`` rows are collected, concatenates them along axis 0, runs the graph once and hands
each caller its own rows back. Given ``company`` (how many requests are in the engine), it stops
waiting once every one of them has an item in the batch: a lone request does not wait ``max_delay``
for company that cannot come (5 ms per graph call, twice a request, at concurrency 1). Nor does it
hand its inputs to the worker thread at all: alone in the engine, with nothing queued or running, it
runs the graph in its own thread (the two hand-offs cost ~2 ms a request at concurrency 1, measured in
docs/service.md#where-the-rest-of-the-request-goes). One graph call runs at a time either way.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass
class _Item:
    feeds: dict[str, np.ndarray]
    rows: int
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(self, name: str, runner: Runner, max_batch: int, max_delay_s: float,
                 on_batch: Callable[[int, list[float]], None] | None = None,
                 company: Callable[[], int] | None = None):
        self.name, self.runner = name, runner
        self.max_batch, self.max_delay_s = max_batch, max_delay_s
        self.on_batch = on_batch  # (rows, per-item queue waits) for metrics
        self.company = company  # requests that may submit; None: always wait max_delay for more
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._running = threading.Lock()  # held through every runner call, the worker's and a lone caller's
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, feeds: dict[str, np.ndarray]) -> Future:
        """Queue inputs of at most ``max_batch`` rows; the future yields the outputs for exactly those rows."""
        item = _Item(feeds, rows=len(next(iter(feeds.values()))))
        if item.rows > self.max_batch:
            raise ValueError(f"{item.rows} rows are more than the {self.name} batch limit {self.max_batch}")
        self._queue.put(item)
        return item.future

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs for ``feeds``, of any batch size: more rows than ``max_batch`` (many faces in
        one photo) go as several items, since a TensorRT engine's profile ends at ``max_batch``."""
        rows = len(next(iter(feeds.values())))
        if rows <= self.max_batch and self._alone() and self._running.acquire(blocking=False):
            try:
                if self.on_batch:
                    self.on_batch(rows, [0.0])
                return self.runner(feeds)
            finally:
                self._running.release()
        futures = [self.submit({k: v[i:i + self.max_batch] for k, v in feeds.items()})
                   for i in range(0, rows, self.max_batch)]
        parts = [future.result() for future in futures]
        return parts[0] if len(parts) == 1 else [np.concatenate(outs) for outs in zip(*parts)]

    def _alone(self) -> bool:
        """No other request can join this call's batch: the engine holds only the caller, and nothing
        is queued (a batch being run holds ``_running``, which the caller then fails to take)."""
        return self.company is not None and self.company() <= 1 and self._queue.empty()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        pending: _Item | None = None
        while True:
            first = pending or self._queue.get()
            pending = None
            if first is None:
                return
            batch, rows = [first], first.rows
            deadline = time.perf_counter() + self.max_delay_s
            while rows < self.max_batch and (self.company is None or self.company() > len(batch)):
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if item is None or rows + item.rows > self.max_batch:
                    pending = item  # runs next; a stop request ends the loop after this batch
                    if item is None:
                        self._queue.put(None)
                        pending = None
                    break
                batch.append(item)
                rows += item.rows
            self._run(batch, rows)

    def _run(self, batch: list[_Item], rows: int) -> None:
        started = time.perf_counter()
        if self.on_batch:
            self.on_batch(rows, [started - item.submitted for item in batch])
        try:
            feeds = {k: np.concatenate([item.feeds[k] for item in batch]) for k in batch[0].feeds}
            with self._running:
                outputs = self.runner(feeds)
        except Exception as error:  # every waiting caller must hear about it
            for item in batch:
                item.future.set_exception(error)
            return
        start = 0
        for item in batch:
            item.future.set_result([out[start:start + item.rows] for out in outputs])
            start += item.rows
