"""Steps made ahead by worker processes arrive in order and equal the inline ones."""

import torch

from training.prefetch import Deadline, step_inputs


def _make(step: int):
    g = torch.Generator().manual_seed(step)
    return torch.rand(3, generator=g), step * 2


def test_workers_yield_the_inline_steps_in_order():
    inline = list(step_inputs(_make, 5, 12))
    ahead = list(step_inputs(_make, 5, 12, workers=2))
    assert [s for s, _ in ahead] == list(range(5, 12))
    for (s, (x, y)), (t, (u, v)) in zip(inline, ahead):
        assert s == t and torch.equal(x, u) and y == v


def test_an_empty_range_yields_nothing():
    assert list(step_inputs(_make, 4, 4, workers=2)) == [] and list(step_inputs(_make, 4, 4)) == []


def test_deadline():
    assert not Deadline(None).passed() and not Deadline(10).passed() and Deadline(1e-9).passed()
