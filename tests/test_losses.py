"""Loss functions on hand-made cases with known values."""

import numpy as np
import torch

from training import losses
from training.facemodel import mirror_map


def test_symmetry_loss_is_zero_for_a_mirror_symmetric_map_only():
    s = 8
    mask = np.ones((s, s), bool)
    mm = torch.from_numpy(mirror_map(mask)).long()
    cols = torch.arange(s, dtype=torch.float32) - (s - 1) / 2
    a = torch.zeros(1, 3, s, s)
    a[:, 0] = cols  # x is odd in the column, y and z even: symmetric
    a[:, 1] = cols.abs()
    assert losses.symmetry_loss(a, mm) < 1e-6
    a[:, 2] = cols  # z odd: not symmetric
    assert losses.symmetry_loss(a, mm) > 0.5


def test_laplacian_vanishes_on_linear_maps_in_the_interior():
    s = 10
    mask = torch.ones(s, s, dtype=torch.bool)
    rows, cols = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    a = torch.stack([2 * cols + rows, rows, cols * 0 + 3])[None]
    lap = losses.laplacian(a, mask)
    assert lap[..., 1:-1, 1:-1].abs().max() < 1e-5
    bumped = a.clone()
    bumped[0, 2, 5, 5] += 1
    assert losses.laplacian_loss(bumped, mask) > losses.laplacian_loss(a, mask)


def test_asm_loss_weights_identity_errors_by_w():
    s = 4
    mask = torch.ones(s, s)
    weight = torch.ones(s, s)
    weight[0, 0] = 16
    gt = torch.zeros(1, 3, s, s)
    err = gt.clone()
    err[0, 0, 0, 0] = 1.0
    plain = losses.asm_loss(err, gt, gt, gt, torch.ones(s, s), mask)
    weighted = losses.asm_loss(err, gt, gt, gt, weight, mask)
    torch.testing.assert_close(weighted, 16 * plain)
    torch.testing.assert_close(losses.asm_loss(gt, gt, err, gt, weight, mask), torch.tensor(1 / 16))


def test_contextual_loss_prefers_the_same_feature_set_in_any_order():
    torch.manual_seed(0)
    y = torch.randn(1, 8, 6, 6)
    shuffled = y.flatten(2)[:, :, torch.randperm(36)]
    other = torch.randn(1, 8, 36)
    same = losses.contextual_loss(shuffled, y)
    assert same < 1e-3  # a permutation of the same features is a perfect context match
    assert losses.contextual_loss(other, y) > same + 0.1


def test_parametric_and_landmark_losses_known_values():
    pred, target = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    torch.testing.assert_close(losses.parametric_loss(pred, target, torch.tensor([[2.0]]), tau=0.5), torch.tensor(7.0))
    lm = torch.zeros(1, 68, 2)
    torch.testing.assert_close(losses.landmark_loss(lm + torch.tensor([3.0, 4.0]), lm), torch.tensor(25.0))


def test_reconstruction_loss_ignores_masked_out_pixels():
    a, b = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    b[..., 0, 0] = 10.0
    mask = torch.ones(1, 1, 4, 4)
    assert losses.reconstruction_loss(a, b, mask) > 0
    mask[..., 0, 0] = 0
    assert losses.reconstruction_loss(a, b, mask) == 0


def test_adversarial_and_identity_losses():
    assert losses.adversarial_loss(torch.full((1, 1, 2, 2), 10.0), real=True) < 1e-3
    assert losses.adversarial_loss(torch.full((1, 1, 2, 2), 10.0), real=False) > 5
    f = torch.randn(2, 16)
    assert losses.identity_loss(f, 3 * f) < 1e-6
    assert losses.identity_loss(f, -f) > 1.99
