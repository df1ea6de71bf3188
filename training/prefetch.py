"""Each training step's inputs made ahead of time by worker processes.

Every stage draws its step-``k`` inputs as a pure function of (seed, k): synthetic renders, fitted-photo
crops, profiled faces. So workers can make steps in parallel and out of order, and the loop still sees
exactly the batches it would have made itself. On a GPU machine this is what keeps the card fed; with
``workers=0`` nothing changes from making them inline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

T = TypeVar("T")


class _Steps(Dataset):
    """Steps ``start`` … ``stop - 1`` of ``make`` as a map-style dataset (item ``i`` is step ``start + i``)."""

    def __init__(self, make: Callable[[int], T], start: int, stop: int):
        self.make, self.start, self.stop = make, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> T:
        return self.make(self.start + i)


def _one_thread(_worker_id: int) -> None:
    # Workers render on the CPU side by side; torch's own thread pool in each would oversubscribe the cores.
    torch.set_num_threads(1)


def step_inputs(make: Callable[[int], T], start: int, stop: int, workers: int = 0) -> Iterator[tuple[int, T]]:
    """Yield ``(step, make(step))`` for ``step`` in ``start`` … ``stop - 1``, in order.

    ``workers`` > 0 makes them in that many processes (forked, so ``make`` need not pickle), a few steps
    ahead of the consumer; their outputs should be tensors or dataclasses of tensors."""
    if workers <= 0:
        for step in range(start, stop):
            yield step, make(step)
        return
    loader = DataLoader(_Steps(make, start, stop), batch_size=None, shuffle=False, num_workers=workers,
                        prefetch_factor=4, worker_init_fn=_one_thread, multiprocessing_context="fork")
    yield from enumerate(loader, start)


class Deadline:
    """A wall-clock budget for a training loop: ``minutes`` None or 0 means none."""

    def __init__(self, minutes: float | None):
        self.end = time.monotonic() + 60 * minutes if minutes else None

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end
