"""Jaw marching on position maps (training.jaw_marching) against the fitting's marching on the exact
ICT vertices (training.fitting.contour), the slow reference it reads through UV taps."""

import numpy as np
import pytest
import torch

from training.jaw_marching import JawMarching
from training.stages.common import project_landmarks

SIZE = 128


@pytest.fixture(scope="module")
def neutral(uv_models):
    """The neutral face's (1, 3, S, S) position map, its marching and its exact canonical vertices."""
    model = uv_models[SIZE]
    a = torch.from_numpy(model.identity_map(None)).permute(2, 0, 1)[None].float()
    canonical = model.frame.to_canonical(model.kit.neutral)
    return a, JawMarching(model), canonical, torch.from_numpy(model.topology.landmarks_uv)


def pose(yaw: float, pitch: float = 0.1) -> torch.Tensor:
    return torch.tensor([[yaw, pitch, 0.05, 0.02, -0.03, 0.1]])


def test_taps_read_the_parallels_vertices(neutral):
    a, marching, canonical, _ = neutral
    read = marching.candidate_points(a)[0].numpy()
    exact = canonical[marching.contour.candidates.ravel()]
    assert np.abs(read - exact).mean() < 2e-3  # canonical units: ~0.3 mm
    for yaw in (-0.9, -0.4, 0.4, 0.9):
        p = pose(yaw)
        from_map = marching.contour.outermost(torch.from_numpy(read)[None], p[:, 0], p[:, 1])
        from_mesh = marching.contour.outermost(torch.from_numpy(exact)[None].float(), p[:, 0], p[:, 1])
        assert (from_map == from_mesh).float().mean() >= 0.8


def test_only_the_side_turned_away_moves_and_it_moves_out(neutral):
    a, marching, _, landmarks_uv = neutral
    frontal = pose(0.0)
    fixed = project_landmarks(a, frontal, landmarks_uv, SIZE)
    assert torch.equal(marching.landmarks(a, frontal, fixed, SIZE), fixed)
    for yaw, away, facing, outwards in ((0.7, slice(9, 17), slice(0, 9), 1.0), (-0.7, slice(0, 8), slice(8, 17), -1.0)):
        p = pose(yaw)
        fixed = project_landmarks(a, p, landmarks_uv, SIZE)
        marched = marching.landmarks(a, p, fixed, SIZE)
        assert torch.equal(marched[:, facing], fixed[:, facing]) and torch.equal(marched[:, 17:], fixed[:, 17:])
        shift = (marched[0, away, 0] - fixed[0, away, 0]) * outwards
        assert (shift >= 0).all() and shift.max() > 2.0  # pixels in a 128-px crop


def test_gradients_reach_the_maps_and_the_pose(neutral):
    a, marching, _, landmarks_uv = neutral
    a = a.clone().requires_grad_(True)
    p = pose(0.6).requires_grad_(True)
    marched = marching.landmarks(a, p, project_landmarks(a, p, landmarks_uv, SIZE), SIZE)
    marched[:, 9:17].sum().backward()
    assert a.grad.abs().sum() > 0 and p.grad[0, :3].abs().sum() > 0
