"""ICT's head in the service (service.engine.head): the bounded joint fit and the mesh joined to the region."""

import numpy as np
import pytest

from service.engine.head import EXACT_MAPS, HEAD_ASSET_PATH, FitPriors, HeadFit, HeadModel


@pytest.fixture(scope="module")
def head_fit(uv_models):
    model = uv_models[128]
    topology = model.topology.to_npz_dict()
    # The weak prior: these maps are ICT's model itself, exact.
    return model, HeadFit.build(HeadModel.load(), topology, 128, model.frame.center, model.frame.scale, EXACT_MAPS)


@pytest.fixture(scope="module")
def service_fit(uv_models):
    """The fit as the service builds it: the default prior, tuned for a network's noisy maps."""
    model = uv_models[128]
    return HeadFit.build(HeadModel.load(), model.topology.to_npz_dict(), 128, model.frame.center, model.frame.scale)


def maps(model, id_coeffs=None, exp_weights=None):
    a = model.identity_map(id_coeffs)
    if exp_weights is not None:
        a = a + model.expression_map(exp_weights)
    return a.transpose(2, 0, 1).astype(np.float64)


def test_neutral_in_neutral_out(head_fit, kit):
    model, fit = head_fit
    a = maps(model)
    head = fit.joined_cm(a, fit.model_cm(fit.fit(a)))
    width = np.ptp(kit.neutral[model.region.vertex_ids, 0])
    held = fit.head.basis_vertices
    assert np.isin(model.region.vertex_ids, held).all()
    assert np.abs(head[held] - kit.neutral[held]).max() < 1e-4 * width
    # The eyeballs: ICT's, from the asset's affine maps.
    eyes = np.concatenate([np.arange(start, end) for start, end in fit.head.eyeballs])
    assert np.abs(head[eyes] - kit.neutral[eyes]).max() < 1e-4 * width
    # The asset holds bases for every vertex but the eyeballs' (teeth, gums and tongue included).
    assert not np.isnan(head).any()
    assert np.array_equal(np.sort(np.r_[held, eyes]), np.arange(len(head)))


def test_the_asset_is_light_and_holds_ict_s_bases(kit):
    """The repository keeps every version of the asset: it holds the bases the fit, the seam and
    region=head read (7.41 MB), ICT's own values to float16 precision; the eyeballs, teeth, and gums and
    tongue take an affine map per identity component each, and the mouth's parts the deltas of the jaw's
    four expressions, the only ones that move them (full bases there would be 2.58 MB more)."""
    assert HEAD_ASSET_PATH.stat().st_size < 7_500_000
    head = HeadModel.load()
    ids = head.basis_vertices
    assert np.array_equal(ids, np.arange(head.eyeballs.min()))
    assert np.array_equal(head.neutral, kit.neutral[:len(head.neutral)])
    # Expressions: float16 everywhere; at the teeth, gums and tongue only the jaw's four are stored
    # (two gum vertices that other expressions move keep full bases), the rest are 0 at ICT's < 0.01 mm.
    assert np.abs(head.expression - kit.expression[:, ids]).max() < 1e-3
    with np.load(HEAD_ASSET_PATH) as d:
        stored, full = d["mouth_expressions"], d["basis_vertices"]
    assert [head.expression_names[i] for i in stored] == ["jawOpen", "jawForward", "jawLeft", "jawRight"]
    mouth = np.setdiff1d(np.arange(kit.parts["gums_and_tongue"][0], kit.parts["teeth"][1]), full)
    assert len(mouth) == 7_389 - 2
    assert not np.delete(head.expression[:, mouth], stored, axis=0).any()
    # Identity: float16 where stored in full; the affine maps at the mouth's parts, per component at a
    # unit coefficient 0.30 mm at most on the teeth and 0.57 mm on the gums and tongue (ICT moves them
    # by 4.3 / 5.3 mm), and at 100-component unit-variance draws 0.19 / 0.23 mm on average.
    dense = np.setdiff1d(ids, mouth)
    assert np.abs(head.identity[:, dense] - kit.identity[:, dense]).max() < 1e-3
    draws = np.random.default_rng(0).standard_normal((20, 100)).astype(np.float32)
    for part, bound_cm in (("teeth", 0.05), ("gums_and_tongue", 0.07)):
        at = np.intersect1d(np.arange(*kit.parts[part]), mouth)
        error = head.identity[:, at] - kit.identity[:, at]
        assert np.linalg.norm(error, axis=2).max() < bound_cm, part
        assert np.linalg.norm(np.tensordot(draws, error, axes=1), axis=2).mean() < 0.03, part
        # Not the dense bases by another name: the map does not reproduce ICT's float16 values.
        assert np.abs(error).max() > 1e-2, part


def test_bounded_fit_recovers_synthetic_weights(head_fit, kit):
    model, fit = head_fit
    rng = np.random.default_rng(3)
    weights = np.zeros(53, np.float32)
    weights[rng.choice(53, 6, replace=False)] = rng.uniform(0.3, 1.0, 6)
    coefficients = fit.fit(maps(model, rng.standard_normal(100).astype(np.float32) * 0.5, weights))
    assert coefficients.expression.min() >= 0.0 and coefficients.expression.max() <= 1.0
    # The prior pulls small weights to 0 and shrinks the rest a little; what is there is found.
    assert np.abs(coefficients.expression - weights).mean() < 0.05
    assert set(np.argsort(coefficients.expression)[-6:]) == set(np.flatnonzero(weights))


@pytest.mark.parametrize("which", ["weak", "service"])
def test_weights_stay_in_range_for_an_exaggerated_face(head_fit, service_fit, which):
    model, fit = head_fit
    fit = fit if which == "weak" else service_fit
    weights = np.zeros(53, np.float32)
    weights[26] = 2.5  # jawOpen far beyond the rig's range
    w = fit.fit(maps(model, None, weights)).expression
    assert w.min() >= 0.0 and w.max() <= 1.0 and w[26] == pytest.approx(1.0, abs=1e-6)


def smooth_noise(seed: int, amplitude: float = 0.01) -> np.ndarray:
    """(3, 128, 128) canonical: a few random low-frequency waves, like a network's errors (0.01 ~ 1.7 mm)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:128, 0:128] / 128.0
    out = np.zeros((3, 128, 128))
    for c in range(3):
        for _ in range(4):
            fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
            out[c] += amplitude / 2 * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    return out


def test_the_default_prior_keeps_noise_out_and_a_large_expression_in(head_fit, service_fit):
    model, weak = head_fit
    names = weak.head.expression_names
    noisy = [maps(model) + smooth_noise(seed) for seed in range(4)]
    # The weak prior turns such errors into weights; the service's prior leaves a neutral face neutral.
    assert max(weak.fit(a).expression.max() for a in noisy) > 0.2
    assert max(service_fit.fit(a).expression.max() for a in noisy) < 0.05
    weights = np.zeros(53, np.float32)
    weights[names.index("jawOpen")] = 0.8
    w = service_fit.fit(maps(model, None, weights) + smooth_noise(9)).expression
    assert w[names.index("jawOpen")] == pytest.approx(0.8, abs=0.1)
    assert np.delete(w, names.index("jawOpen")).max() < 0.1
    assert FitPriors().expression_l1 > EXACT_MAPS.expression_l1


def test_the_seam_has_no_step(head_fit, service_fit):
    """A residual the linear model cannot express (a bump on the region) is carried out of the region
    along the mesh: every edge across the region's rim is at most 1.5x its length on ICT's neutral head
    (max 1.22x here; 1.32x with the Euclidean-neighbour spread this replaced). The issue's "1.5x the
    median edge" cannot hold: ICT's own neutral has a 1.08 cm edge across the rim, 4x the median. With
    the weak prior the fitted model itself stretches an eye-socket edge 1.45x to chase the bump (1.66x
    joined): the seam is the service's fit's."""
    model, _ = head_fit
    fit = service_fit
    a = maps(model)
    a += 0.02 * np.sin(np.linspace(0, 6, 128))[None, None, :]  # ~3.5 mm waves over the region
    head = fit.joined_cm(a, fit.model_cm(fit.fit(a)))
    asset = fit.head
    tris = asset.triangles
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    inside = np.isin(edges, fit.region_ids)
    across = edges[inside[:, 0] != inside[:, 1]]
    length = lambda e: np.linalg.norm(head[e[:, 0]] - head[e[:, 1]], axis=1)  # noqa: E731
    neutral_across = np.linalg.norm(asset.neutral[across[:, 0]] - asset.neutral[across[:, 1]], axis=1)
    assert len(across) > 100
    assert (length(across) / neutral_across).max() <= 1.5
    assert (length(across) / neutral_across).max() <= 1.3  # the Euclidean spread's 1.32 would not pass
    # and no edge across the rim stretched by more than the bump itself
    assert np.abs(length(across) - neutral_across).max() < 0.35


def test_an_altered_asset_is_refused(tmp_path):
    from service.engine.head import HeadAssetError

    bad = tmp_path / "ict_head.npz"
    bad.write_bytes(b"not the asset")
    with pytest.raises(HeadAssetError, match="altered or corrupt"):
        HeadModel.load(bad)


def test_a_region_beyond_the_asset_s_bases_is_refused(uv_models):
    """A store whose region reads vertices the asset holds no bases for fails at start-up, not with a
    silently wrong fit."""
    from dataclasses import replace

    from service.engine.head import HeadAssetError

    model, head = uv_models[64], HeadModel.load()
    keep = head.basis_vertices != head.layouts[64][1][0, 0]  # a vertex the 64 x 64 maps sample
    short = replace(head, basis_vertices=head.basis_vertices[keep], identity=head.identity[:, keep],
                    expression=head.expression[:, keep])
    with pytest.raises(HeadAssetError, match="no bases"):
        HeadFit.build(short, model.topology.to_npz_dict(), 64, model.frame.center, model.frame.scale)


def box_problems(seed: int, count: int = 40):
    """Square upper-triangular systems like the fit's (a Cholesky factor of a gram with a prior on its
    diagonal), right-hand sides from small to far beyond the box, so that from none to most weights sit
    at a bound."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        a = rng.standard_normal((80, 53))
        r = np.linalg.cholesky(a.T @ a + 0.5 * np.eye(53)).T
        inside = rng.uniform(0.05, 0.95, 53)  # an optimum inside the box, pushed out by a growing margin
        yield r, r @ (0.5 + (inside - 0.5) * (1.0 + 4.0 * i / count))


def test_the_active_set_solver_finds_bvls_optimum():
    """unit_box_least_squares against scipy's bvls, the reference it replaced (and falls back to)."""
    from scipy.optimize import lsq_linear

    from service.engine.head import unit_box_least_squares

    at_bounds = []
    for r, d in box_problems(7):
        w = unit_box_least_squares(r, d)
        reference = np.clip(lsq_linear(r, d, bounds=(0.0, 1.0), method="bvls").x, 0.0, 1.0)
        assert w.min() >= 0.0 and w.max() <= 1.0
        np.testing.assert_allclose(w, reference, atol=1e-8)
        at_bounds.append(np.mean((w == 0.0) | (w == 1.0)))
    assert min(at_bounds) < 0.2 and max(at_bounds) > 0.6  # the cases span few to most weights bounded


def test_the_active_set_solver_falls_back_to_bvls():
    from scipy.optimize import lsq_linear

    from service.engine.head import unit_box_least_squares

    r, d = next(box_problems(8, 1))
    reference = np.clip(lsq_linear(r, d, bounds=(0.0, 1.0), method="bvls").x, 0.0, 1.0)
    np.testing.assert_array_equal(unit_box_least_squares(r, d, max_steps=0), reference)
