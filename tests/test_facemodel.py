"""ICT-FaceKit in UV space: round trips, mirror map, landmark order, topology invariants."""

import numpy as np
import pytest

from training.facemodel import (
    REGION_NAMES,
    UVLayout,
    UVSampler,
    blend,
    grid_triangles,
    mirror_map,
    rasterize_uv,
)
from training.facemodel.describe import main as describe_main


def expressive_face(kit, seed=0):
    names = kit.expression_names
    exp = np.zeros(53, np.float32)
    for name, w in {"jawOpen": 1.0, "eyeBlink_L": 1.0, "mouthFunnel": 0.5, "browInnerUp_R": 0.7}.items():
        exp[names.index(name)] = w
    rng = np.random.default_rng(seed)
    return kit.vertices(rng.standard_normal(100).astype(np.float32) * 1.5, exp)


def round_trip_error(model, vertices):
    """Per-vertex distance after vertices -> UV map -> masked-bilinear sample at vertex UVs."""
    topo = model.topology
    uv_map = model.layout.to_map(vertices)
    sampler = UVSampler(model.size, topo.ict_sample_index.astype(np.int64), topo.ict_sample_weight)
    back = sampler.sample(uv_map)
    return np.linalg.norm(back - vertices[topo.ict_vertex_ids], axis=1)


def test_decode_adds_deltas(kit):
    rng = np.random.default_rng(1)
    ids = rng.standard_normal((2, 100)).astype(np.float32)
    exp = rng.random((2, 53)).astype(np.float32)
    v = kit.vertices(ids, exp)
    assert v.shape == (2, kit.num_vertices, 3)
    expected = kit.neutral + np.tensordot(ids[1], kit.identity, 1) + np.tensordot(exp[1], kit.expression, 1)
    np.testing.assert_allclose(v[1], expected, atol=1e-3)


def test_blend_agrees_between_numpy_and_torch(kit):
    torch = pytest.importorskip("torch")
    coeffs = np.random.default_rng(2).random((3, 53)).astype(np.float32)
    basis = kit.expression[:, :500]
    np.testing.assert_allclose(
        blend(torch.from_numpy(basis), torch.from_numpy(coeffs)).numpy(), blend(basis, coeffs), atol=1e-5
    )


@pytest.mark.parametrize("which", ["neutral", "expressive"])
def test_uv_round_trip_at_256(kit, uv_models, which):
    model = uv_models[256]
    vertices = kit.neutral if which == "neutral" else expressive_face(kit)
    err = round_trip_error(model, vertices)
    width = np.ptp(kit.neutral[model.region.vertex_ids, 0])
    rel = err / width
    # Away from the lid and lip rims (squeezed in UV) every vertex comes back within 0.5 %.
    assert np.mean(rel) < 0.002
    assert np.mean(rel < 0.005) > 0.95
    assert rel.max() < 0.03


def test_round_trip_improves_with_resolution(kit, uv_models):
    errors = [round_trip_error(uv_models[s], kit.neutral).mean() for s in (64, 128, 256)]
    assert errors[0] > errors[1] > errors[2]


def test_mirror_map_is_an_involution_onto_the_mask(uv_models):
    for model in uv_models.values():
        topo = model.topology
        mm, mask = topo.mirror_map, topo.uv_mask
        ok = mm >= 0
        assert ok.sum() > 0.99 * mask.sum()
        assert mask.ravel()[mm[ok]].all()
        assert (mm.ravel()[mm[ok]] == np.flatnonzero(ok)).all()


def test_mirrored_neutral_face_equals_itself_with_x_negated(uv_models):
    model = uv_models[128]
    a_id = model.identity_map()
    mm = model.topology.mirror_map
    ok = mm >= 0
    mirrored = a_id.reshape(-1, 3)[mm[ok]] * np.array([-1, 1, 1], np.float32)
    np.testing.assert_allclose(mirrored, a_id[ok], atol=2e-3)  # 2e-3 canonical = 0.3 mm


def test_mirror_map_on_a_hand_made_mask():
    mask = np.zeros((4, 4), bool)
    mask[1, 0] = mask[1, 3] = mask[2, 1] = True  # (2, 1)'s mirror (2, 2) is missing
    mm = mirror_map(mask)
    assert mm[1, 0] == 1 * 4 + 3 and mm[1, 3] == 1 * 4 + 0
    assert mm[2, 1] == -1 and (mm[~mask] == -1).all()


def test_landmarks_follow_ibug_68_order(kit):
    lm = kit.neutral[kit.landmarks68]
    x, y, z = lm.T
    jaw = lm[0:17]
    assert np.all(np.diff(jaw[:9, 0]) > 0) and np.all(np.diff(jaw[8:, 0]) > 0)  # subject's right to left
    assert np.argmin(jaw[:, 1]) == 8 and abs(x[8]) < 0.1  # chin
    assert np.all(x[17:22] < 0) and np.all(x[22:27] > 0)  # brows
    assert np.all(np.diff(y[27:31]) < 0) and np.all(np.abs(x[27:31]) < 0.1)  # nose bridge downwards
    assert np.argmax(z[27:36]) == 3  # 30 is the nose tip
    assert np.all(np.diff(x[31:36]) > 0)  # nostril base, left to right in the image
    assert np.all(x[36:42] < 0) and np.all(x[42:48] > 0)  # eyes
    assert x[36] < x[39] and x[42] < x[45]  # 36 and 45 are outer corners
    assert y[17:27].min() > y[36:48].max()  # brows above the eyes
    assert x[48] < 0 < x[54] and abs(x[51]) < 0.1 and abs(x[57]) < 0.1  # mouth corners, centre
    # 50-52 are the top of the upper lip (51 in the cupid's bow dip), 57 the bottom of the lower.
    assert set(np.argsort(y[48:60])[-3:] + 48) == {50, 51, 52} and y[57] == y[48:60].min()
    assert y[30] > y[51] > y[57] > y[8]


def test_landmarks_lie_on_the_uv_mask(uv_models):
    for size, model in uv_models.items():
        lm = np.round(model.topology.landmarks_uv).astype(int)
        assert np.all((lm >= 0) & (lm < size))
        near = [model.topology.uv_mask[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any() for c, r in lm]
        assert all(near)


def test_grid_triangles_on_a_hand_made_mask():
    mask = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], bool)
    tris = grid_triangles(mask)
    # Two full 2x2 blocks (2 triangles each) and two blocks with three valid pixels (1 each).
    assert len(tris) == 6
    assert tris.max() == mask.sum() - 1
    assert len({tuple(sorted(t)) for t in tris}) == 6


def test_topology_invariants(uv_models):
    for size, model in uv_models.items():
        topo = model.topology
        n = int(topo.uv_mask.sum())
        assert topo.vertex_pixels.shape == (n, 2) and topo.uv_coords.shape == (n, 2)
        assert topo.triangles.min() >= 0 and topo.triangles.max() < n
        assert np.all((topo.uv_coords > 0) & (topo.uv_coords < 1))
        assert ((topo.region_labels > 0) == topo.uv_mask).all()
        assert set(np.unique(topo.region_labels)) == set(range(len(REGION_NAMES)))
        assert (topo.weight_mask[~topo.uv_mask] == 0).all() and (topo.weight_mask[topo.uv_mask] >= 3).all()
        assert topo.weight_mask.max() == 16
        np.testing.assert_allclose(topo.ict_sample_weight.sum(1), 1.0, atol=1e-5)
        assert topo.ict_triangles.max() < len(topo.ict_vertex_ids)


def test_grid_mesh_faces_the_camera(uv_models):
    model = uv_models[128]
    v = model.to_mesh_vertices(model.identity_map())
    t = model.topology.triangles
    normals = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    assert np.mean(normals[:, 2] > 0) > 0.9


def test_expression_basis_recovers_blendshape_weights(kit, uv_models):
    model = uv_models[128]
    exp = np.zeros(53, np.float32)
    exp[[kit.expression_names.index(n) for n in ("jawOpen", "mouthSmile_L", "eyeBlink_R")]] = [0.7, 0.5, 1.0]
    a_exp = model.to_mesh_vertices(model.expression_map(exp))  # (V, 3)
    basis = model.topology.expression_basis.reshape(53, -1).T  # (3V, 53)
    weights, *_ = np.linalg.lstsq(basis, a_exp.ravel(), rcond=None)
    np.testing.assert_allclose(weights, exp, atol=1e-3)


def test_canonical_frame_keeps_faces_inside_tanh_range(kit, uv_models):
    model = uv_models[64]
    rng = np.random.default_rng(3)
    ids = rng.standard_normal((64, 100)).astype(np.float32) * 2.0
    exp = (rng.random((64, 53)) < 0.2) * rng.random((64, 53))
    a = model.identity_map(ids) + model.expression_map(exp.astype(np.float32))
    assert np.abs(a).max() < 0.95
    assert model.frame.center[0] == 0.0


def test_rasterize_uv_covers_half_the_square():
    size = 32
    tri = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # lower-left half of the unit square
    index, bary = rasterize_uv(tri, size)
    rows, cols = np.mgrid[0:size, 0:size]
    u, v = (cols + 0.5) / size, 1 - (rows + 0.5) / size
    np.testing.assert_array_equal(index == 0, u + v <= 1)
    np.testing.assert_allclose(bary[index == 0].sum(-1), 1.0)
    np.testing.assert_allclose(bary[index == 0][:, 1], u[index == 0], atol=1e-9)


def test_sampler_reproduces_a_linear_map_inside_the_mask():
    size = 16
    mask = np.zeros((size, size), bool)
    mask[3:13, 2:14] = True
    rows, cols = np.mgrid[0:size, 0:size]
    linear = np.stack([2.0 * cols + 1.0, -0.5 * rows], -1)
    uv = np.array([[0.4, 0.5], [0.61, 0.33], [0.2, 0.75]])
    sampler = UVSampler.build(uv, mask)
    xy = np.stack([uv[:, 0] * size - 0.5, (1 - uv[:, 1]) * size - 0.5], 1)
    np.testing.assert_allclose(sampler.sample(linear), np.stack([2 * xy[:, 0] + 1, -0.5 * xy[:, 1]], 1), atol=1e-5)


def test_layout_maps_constant_attribute_to_constant(uv_models):
    layout: UVLayout = uv_models[64].layout
    const = np.ones((1, uv_models[64].kit.num_vertices, 1), np.float32) * 7
    m = layout.to_map(const)[0, ..., 0]
    np.testing.assert_allclose(m[layout.mask], 7, rtol=1e-6)
    assert (m[~layout.mask] == 0).all()


def test_describe_writes_a_sheet(tmp_path, capsys, kit):
    out = tmp_path / "sheet.png"
    describe_main(["describe", "--out", str(out)])
    assert out.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "valid UV pixels" in printed and "256" in printed
