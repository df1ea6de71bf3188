"""Metric code on hand-made cases with known answers."""

import numpy as np
import pytest

from training.evaluate import metrics


def square_landmarks():
    rng = np.random.default_rng(0)
    pts = rng.random((68, 2)) * 100
    pts[0], pts[1] = [0, 0], [100, 100]  # box 100 x 100
    return pts


def test_nme_of_a_known_shift():
    gt = square_landmarks()
    assert metrics.box_size(gt) == pytest.approx(100)
    assert metrics.nme_2d(gt + [3.0, 4.0], gt) == pytest.approx(0.05)
    assert metrics.nme_2d(gt, gt) == 0


def test_nme_3d_ignores_scale_and_depth_offset():
    rng = np.random.default_rng(1)
    gt = np.c_[square_landmarks(), rng.random(68) * 50]
    pred = 1.7 * gt + [5.0, -2.0, 300.0]
    assert metrics.nme_3d(pred, gt) == pytest.approx(0, abs=1e-9)
    assert metrics.nme_3d(pred + [[1.0, 0, 0]] * 68 * np.sign(rng.standard_normal((68, 1))), gt) > 0


def test_rigid_alignment_undoes_a_known_rotation():
    rng = np.random.default_rng(2)
    gt = rng.standard_normal((200, 3))
    a = np.deg2rad(35)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    moved = gt @ rot.T + [1.0, 2.0, 3.0]
    assert metrics.aligned_vertex_error(moved, gt) == pytest.approx(0, abs=1e-9)
    assert metrics.aligned_vertex_error(moved * 1.1, gt) > 0.01
    np.testing.assert_allclose(metrics.rigid_align(moved * 1.1, gt, scale=True), gt, atol=1e-9)
    assert metrics.similarity_vertex_error(moved * 1.1, gt) < 1e-9 < metrics.aligned_vertex_error(moved * 1.1, gt)


def test_photometric_error_and_texture_mae():
    img = np.random.default_rng(3).random((8, 8, 3))
    mask = np.ones((8, 8), bool)
    assert metrics.photometric_error(img, img, mask) == 0
    other = img.copy()
    other[0, 0] += [0.3, 0.4, 0.0]
    assert metrics.photometric_error(other, img, mask) == pytest.approx(0.7 / (64 * 3))  # mean |diff| per channel
    mask[0, 0] = False
    assert metrics.photometric_error(other, img, mask) == 0
    assert metrics.texture_mae(img + 0.1, img, mask) == pytest.approx(0.1)


def test_cosine_and_yaw_bins():
    assert metrics.cosine_similarity(np.array([1.0, 0]), np.array([2.0, 0])) == pytest.approx(1)
    assert metrics.cosine_similarity(np.array([1.0, 0]), np.array([0, 3.0])) == pytest.approx(0)
    assert [metrics.yaw_bin(y) for y in (-10, 29.9, 30, -59, 60, 95)] == ["[0,30)", "[0,30)", "[30,60)", "[30,60)", "[60,90]", "[60,90]"]


def test_held_out_design_is_balanced_and_fixed():
    from training.evaluate.synthetic import YAW_BINS, held_out_design

    cats, yaws = held_out_design(210)
    cats2, yaws2 = held_out_design(210)
    np.testing.assert_array_equal(yaws, yaws2)
    assert np.bincount(cats).tolist() == [30] * 7
    counts = [np.sum((np.abs(yaws) >= lo) & (np.abs(yaws) < hi)) for lo, hi in YAW_BINS]
    assert counts == [70, 70, 70]


def test_expression_error_of_a_perfect_and_a_neutral_predictor(uv_models):
    """Ground truth scores ~0; predicting the mean face scores worse; dropping A_exp costs accuracy."""
    import torch

    from training.evaluate.synthetic import HELD_OUT_SEED, evaluate_expressions, held_out_design
    from training.synth import SynthFaceGenerator, SynthSettings

    model = uv_models[64]
    gen = SynthFaceGenerator(model, SynthSettings(image_size=32))
    cats, yaws = held_out_design(21)
    truth = gen.batch(HELD_OUT_SEED, 0, 21, categories=cats, yaw_degrees=yaws)
    lookup = {float(img.sum()): (truth.a_id[i].numpy(), truth.a_exp[i].numpy()) for i, img in enumerate(truth.image)}

    def oracle(images):
        pairs = [lookup[float(torch.from_numpy(img).sum())] for img in images]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    perfect = evaluate_expressions(oracle, model, 32, size=21, batch_size=21)
    assert perfect["overall"]["mm"] < 1e-3 and perfect["overall"]["n"] == 21
    assert perfect["overall"]["similarity_mm"] < 1e-3
    no_expression = evaluate_expressions(oracle, model, 32, size=21, batch_size=21, with_expression=False)
    assert no_expression["overall"]["mm"] > 0.5
    mean_face = np.broadcast_to(model.identity_map().transpose(2, 0, 1), (21, 3, 64, 64))
    neutral = evaluate_expressions(lambda x: (mean_face[: len(x)], np.zeros_like(mean_face[: len(x)])), model, 32, size=21, batch_size=21)
    assert neutral["overall"]["mm"] > no_expression["overall"]["mm"]
    # A similarity also takes the size out, so it can only lower the error the rigid alignment leaves.
    assert 0 < neutral["overall"]["similarity_mm"] < neutral["overall"]["mm"]
    from training.evaluate.synthetic import mean_face_predictor

    baseline = evaluate_expressions(mean_face_predictor(model), model, 32, size=21, batch_size=21)
    assert baseline == neutral
    assert set(neutral["by_category"]) == {"neutral", "anger", "disgust", "fear", "happy", "sad", "surprise"}


def test_ridge_probe_recovers_a_linear_map_and_reports_what_it_explains():
    from training.evaluate.probe import explained, fit_ridge

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 6))
    w = rng.standard_normal((6, 3))
    y = x @ w + 0.5
    got = fit_ridge(x, y, 1e-6)
    np.testing.assert_allclose(got[:6], w, atol=1e-4)
    np.testing.assert_allclose(got[6], 0.5, atol=1e-4)
    assert explained(y, np.c_[x, np.ones(400)] @ got) == pytest.approx(1, abs=1e-6)
    assert explained(y, np.broadcast_to(y.mean(0), y.shape)) == pytest.approx(0, abs=1e-9)


def test_level_gain_is_the_gain_of_least_absolute_error():
    """Against a search over gains (the slow reference), on colours with a gain and noise applied."""
    rng = np.random.default_rng(3)
    truth = rng.uniform(0.2, 0.8, (16, 16, 3))
    mask = rng.random((16, 16)) > 0.3
    pred = truth / 1.3 + rng.normal(0, 0.05, truth.shape).clip(-0.1, 0.1)
    gain = metrics.level_gain(pred, truth, mask)
    grid = np.linspace(0.5, 2.0, 3001)
    errors = [metrics.texture_mae(g * pred, truth, mask) for g in grid]
    assert metrics.texture_mae(gain * pred, truth, mask) <= min(errors) + 1e-9
    assert abs(gain - grid[int(np.argmin(errors))]) < 0.01 and 1.2 < gain < 1.4
    assert metrics.level_gain(truth * 2, truth, mask) == pytest.approx(0.5)
    assert metrics.level_gain(np.zeros_like(truth), truth, mask) == 1.0
