"""Albedo-model building blocks on data with known answers."""

import numpy as np

from training.albedo import delight, estimate_sh, masked_pca, mirror_fill, reconstruction_error


def random_normals(n, rng):
    v = rng.normal(size=(n, 3)) + [0, 0, 1.5]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_sh_estimate_recovers_lighting_and_delighting_recovers_albedo():
    rng = np.random.default_rng(0)
    normals = random_normals(500, rng)
    sh = np.zeros((9, 3))
    sh[0] = [0.9, 0.85, 0.8]
    sh[1:4] = rng.normal(0, 0.2, (3, 3))
    albedo = np.array([0.7, 0.5, 0.4])
    from training.albedo import sh_matrix

    colours = albedo * (sh_matrix(normals) @ sh)
    est = estimate_sh(colours, normals, albedo, ridge=1e-9)
    np.testing.assert_allclose(est, sh, atol=1e-5)
    recovered, ok = delight(colours, normals, est)
    np.testing.assert_allclose(recovered[ok], np.broadcast_to(albedo, recovered[ok].shape), atol=1e-5)


def test_mirror_fill_copies_only_from_valid_mirrors():
    values = np.array([[1.0], [2.0], [3.0], [4.0]])
    valid = np.array([True, False, False, False])
    mirror = np.array([1, 0, 3, -1])
    out, ok = mirror_fill(values, valid, mirror)
    assert out[1, 0] == 1.0 and ok.tolist() == [True, True, False, False]


def test_masked_pca_recovers_a_low_rank_model_with_missing_data():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(60, 3)))[0].T  # 3 orthonormal components in 60-D
    coeffs = rng.normal(size=(200, 3)) * [3.0, 2.0, 1.0]
    data = 0.5 + coeffs @ basis
    observed = rng.random(data.shape) > 0.3
    model = masked_pca(np.where(observed, data, 0.0), observed, k=3, iterations=30)
    # The learnt subspace spans the true one: projecting the true basis loses nothing.
    residual = basis - (basis @ model.components.T) @ model.components
    assert np.abs(residual).max() < 1e-2
    np.testing.assert_allclose(model.std, [3, 2, 1], rtol=0.2)
    assert reconstruction_error(model, data, observed).max() < 1e-2
    assert model.explained.sum() > 0.99


def test_albedo_cli_on_a_few_fitted_photos(tmp_path):
    """End to end: fit 12 photos, build a 4-component model, read it back."""
    from pathlib import Path

    import pytest

    from training.albedo.__main__ import main as albedo_main
    from training.fitting.__main__ import main as fit_main

    photos = Path(__file__).resolve().parents[2] / "shared" / "data" / "helen-afw-68pt"
    if not photos.is_dir():
        pytest.skip(f"fitting photos not found at {photos}")
    fit_main(["--data", str(photos), "--out", str(tmp_path / "fitted"), "--limit", "12", "--size", "64"])
    albedo_main(["--fitted", str(tmp_path / "fitted"), "--out", str(tmp_path / "albedo.npz"), "--k", "4",
                 "--sheet", str(tmp_path / "sheet.png")])
    model = np.load(tmp_path / "albedo.npz")
    assert model["mean"].shape == (3, 64, 64) and model["basis"].shape == (4, 3, 64, 64)
    assert np.all(np.diff(model["std"]) <= 0) and 0.2 < model["mean"][:, 32, 32].mean() < 0.9  # skin, not black
    assert (tmp_path / "sheet.png").stat().st_size > 5000
