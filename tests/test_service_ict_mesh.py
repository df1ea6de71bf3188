"""The output mesh in ICT's topology (service.engine.ict_mesh): ICT's own vertices, triangles and UVs for
the face region, and its eyeballs, at the face's coefficients plus the maps' residual."""

import numpy as np
import pytest

from service.engine.eyes import IRIS_UV_RADIUS, eye_texture, iris_colour
from service.engine.head import EXACT_MAPS, Coefficients, HeadFit, HeadModel
from service.engine.ict_mesh import IctMeshes
from service.engine.morph import ZERO_BELOW_M
from service.engine.texture import bleed
from training.facemodel import UVLayout, uv_to_pixel

CM = 0.01


@pytest.fixture(scope="module")
def meshes(uv_models):
    model = uv_models[128]
    fit = HeadFit.build(HeadModel.load(), model.topology.to_npz_dict(), 128, model.frame.center, model.frame.scale,
                        EXACT_MAPS)
    return model, IctMeshes(fit, CM)


def maps(model, id_coeffs=None, exp_weights=None):
    a = model.identity_map(id_coeffs)
    if exp_weights is not None:
        a = a + model.expression_map(exp_weights)
    return a.transpose(2, 0, 1).astype(np.float64)


def frame(meshes, cm: np.ndarray) -> np.ndarray:
    return (cm - meshes.fit.center) * CM


def test_ict_neutral_in_ict_neutral_out(meshes, kit):
    model, ict = meshes
    head = ict.fit.head
    a = maps(model)
    face, eyes = ict.positions("full", a, a, ict.fit.fit(a))
    width = np.ptp(kit.neutral[head.face.ids, 0]) * CM
    assert np.abs(face - frame(ict, kit.neutral[head.face.ids])).max() < 1e-4 * width
    assert np.abs(eyes - frame(ict, kit.neutral[head.eyes.ids])).max() < 1e-4 * width
    # ICT's own triangles: the region's, each once, and both eyeballs whole.
    assert len(head.face.triangles) == len(model.region.triangles)
    assert np.array_equal(np.unique(head.face.ids), model.region.vertex_ids)
    assert len(np.unique(head.eyes.ids)) == sum(end - start for start, end in head.eyeballs)


def test_a_coefficient_model_comes_back_as_ict_s_mesh(meshes, kit):
    """Maps that are ICT's model at some coefficients, decoded at those coefficients: ICT's mesh, to the
    asset's float16 bases (the residual is the maps' difference from the decode: 0 up to rounding)."""
    model, ict = meshes
    head = ict.fit.head
    rng = np.random.default_rng(1)
    identity = rng.standard_normal(100).astype(np.float32)
    weights = np.zeros(53, np.float32)
    weights[rng.choice(53, 5, replace=False)] = rng.uniform(0.3, 1.0, 5)
    a_id, a = maps(model, identity), maps(model, identity, weights)
    truth = kit.vertices(identity, weights)
    coefficients = Coefficients(identity.astype(np.float64), weights.astype(np.float64))
    width = np.ptp(kit.neutral[head.face.ids, 0]) * CM
    face, eyes = ict.positions("full", a, a_id, coefficients)
    assert np.abs(face - frame(ict, truth[head.face.ids])).max() < 1e-4 * width
    # The eyeballs: ICT's identity through the asset's affine map per component (0.1 mm here).
    assert np.abs(eyes - frame(ict, truth[head.eyes.ids])).max() < 0.3e-3
    # identity: the weights at 0; expression: the identity mesh moved by ICT's expressions at the weights.
    neutral_face, _ = ict.positions("identity", a, a_id, coefficients)
    assert np.abs(neutral_face - frame(ict, kit.vertices(identity)[head.face.ids])).max() < 1e-4 * width
    rigged, _ = ict.positions("expression", a, a_id, coefficients)
    assert np.abs(rigged - face).max() < 1e-4 * width
    # The morph targets move the identity mesh there too (their deltas under ZERO_BELOW_M are dropped).
    moved = neutral_face + np.tensordot(weights, ict.face_targets.deltas, axes=1)
    assert np.abs(moved - face).max() < 3 * ZERO_BELOW_M


def test_the_layout_s_texture_maps_onto_ict_s_uvs(meshes, kit):
    """A texture painted in the S x S layout (here each texel holds its surface point's position) read
    at an ICT vertex's texture coordinate gives that vertex: the layout is ICT's UV space, v up."""
    model, ict = meshes
    head = ict.fit.head
    size = 512
    layout = UVLayout.build(model.region.triangles, model.region.tri_uv, size)
    painted = bleed(layout.to_map(kit.neutral, fill=0.0), layout.mask)
    xy = uv_to_pixel(head.face.uv, size)
    cols, rows = np.clip(np.round(xy).astype(int), 0, size - 1).T
    error = np.linalg.norm(painted[rows, cols] - kit.neutral[head.face.ids], axis=1)
    # Within a texel's span of the surface (median 0.2 mm; ICT's median edge is 2.7 mm). The largest,
    # 6.5 mm, are rim and eyelid vertices whose texel lies outside the mask (``bleed``'s nearest texel).
    assert np.median(error) < 0.05 and np.percentile(error, 99) < 0.25 and error.max() < 1.0
    # A v flip would put the chin's colour on the forehead.
    flipped = painted[size - 1 - rows, cols]
    assert np.median(np.linalg.norm(flipped - kit.neutral[head.face.ids], axis=1)) > 2.0


def test_bleed_keeps_the_mask_s_inside_and_clamps_beyond_it():
    mask = np.zeros((8, 8), bool)
    mask[1:7, 1:7] = True
    texture = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    out = bleed(texture, mask)
    # Texels reading only the mask's inner pixels keep their colour; the rest (the mask's outermost
    # pixels included: a network's least trained) take the nearest such texel's.
    assert np.array_equal(out[10:22, 10:22], texture[10:22, 10:22])
    inner = {tuple(c) for c in texture[10:22, 10:22].reshape(-1, 3)}
    assert all(tuple(c) in inner for c in out.reshape(-1, 3))
    assert not np.array_equal(out[4:8, 4:8], texture[4:8, 4:8])


def test_iris_colour_is_read_off_the_photo():
    """Eyes of a known iris colour in a synthetic photo: the rule finds it, not the skin or the sclera."""
    photo = np.full((200, 200, 3), (200, 160, 140), np.uint8)
    landmarks = np.zeros((68, 2))
    iris = np.array([40, 90, 160], np.uint8)  # blue
    for first, cx in ((36, 70), (42, 130)):
        angles = np.linspace(np.pi, -np.pi, 6, endpoint=False)
        landmarks[first:first + 6] = np.c_[cx + 20 * np.cos(angles), 100 + 9 * np.sin(angles)]
        photo[88:113, cx - 20:cx + 21] = 240  # sclera
        photo[88:113, cx - 9:cx + 10] = iris
        photo[99:102, cx - 1:cx + 2] = 5  # pupil
    colour = iris_colour(photo, landmarks) * 255
    assert np.abs(colour - iris).max() < 12
    # Eyes off the photo: the stated default, not an error.
    assert iris_colour(photo, landmarks + 1000) == pytest.approx([0.36, 0.25, 0.17])


def test_eye_texture_centres_the_iris():
    texture = eye_texture(np.array([0.2, 0.4, 0.7]), 128)
    assert texture[64, 64].max() < 10  # the pupil at the UV square's centre
    ring = int(64 + 0.7 * IRIS_UV_RADIUS * 128)
    assert texture[64, ring, 2] > texture[64, ring, 0] + 40  # blue iris
    assert texture[64, 100].min() > 150 and texture[64, 100].mean() > texture[64, ring].mean() + 60  # sclera


# --- region=head ----------------------------------------------------------------------------------

def test_region_head_neutral_in_neutral_out(meshes, kit):
    model, ict = meshes
    head = ict.fit.head
    a = maps(model)
    out, _ = ict.positions("full", a, a, ict.fit.fit(a), "head")
    width = np.ptp(kit.neutral[head.face.ids, 0]) * CM
    assert np.abs(out - frame(ict, kit.neutral[head.head.ids])).max() < 1e-4 * width
    # The head holds the face region's vertices and ICT's ears, neck, back of the head and sockets.
    assert np.isin(head.face.ids, head.head.ids).all()
    assert len(np.unique(head.head.ids)) > 2 * len(model.region.vertex_ids)


def test_region_head_holds_the_teeth_gums_and_tongue_and_region_face_does_not(meshes, kit):
    """ICT's teeth (4,412 vertices) and gums and tongue (2,977) are part of the head mesh, each whole,
    read the palette's teeth and gums texels; the face mesh has none of them."""
    model, ict = meshes
    head = ict.fit.head
    a = maps(model)
    out, _ = ict.positions("full", a, a, ict.fit.fit(a), "head")
    face, _ = ict.positions("full", a, a, ict.fit.fit(a), "face")
    assert len(out) == len(head.head.ids) and len(face) == len(head.face.ids)
    palette = {tuple(uv) for uv in head.head_palette_uv}
    for part, entry in (("teeth", 2), ("gums_and_tongue", 3)):
        ids = np.arange(*kit.parts[part])
        assert np.array_equal(np.unique(head.head.ids[np.isin(head.head.ids, ids)]), ids), part
        assert not np.isin(head.face.ids, ids).any(), part
        # Every triangle of the part reads its palette texel alone, whatever ICT's own UVs were.
        tris = head.head.triangles[np.isin(head.head.ids[head.head.triangles], ids).all(axis=1)]
        assert len(tris) == np.all((kit.triangles >= ids[0]) & (kit.triangles <= ids[-1]), axis=1).sum()
        assert {tuple(uv) for uv in head.head.uv[np.unique(tris)]} == {tuple(head.head_palette_uv[entry])}
    assert len(palette) == 4


def test_the_lower_teeth_open_with_jaw_open_and_the_upper_stay(meshes, kit):
    """ICT's jawOpen moves half its teeth vertices (the lower teeth) down and back with the jaw and
    leaves the upper teeth where they are; the head mesh and its morph target do what ICT does."""
    model, ict = meshes
    head = ict.fit.head
    jaw = head.expression_names.index("jawOpen")
    teeth = np.flatnonzero(np.isin(head.head.ids, np.arange(*kit.parts["teeth"])))
    rng = np.random.default_rng(4)
    identity = rng.standard_normal(100).astype(np.float32) * 0.5
    weights = np.zeros(53, np.float32)
    weights[jaw] = 0.8
    a_id, a = maps(model, identity), maps(model, identity, weights)
    coefficients = Coefficients(identity.astype(np.float64), weights.astype(np.float64))
    closed, _ = ict.positions("identity", a, a_id, coefficients, "head")
    opened, _ = ict.positions("full", a, a_id, coefficients, "head")
    # Where ICT puts them, to the asset's affine map per identity component (at 0.5-sigma identities
    # 0.70 mm at most over 200 draws, 0.1 mm on average) and its float16 jaw deltas.
    truth = frame(ict, kit.vertices(identity, weights)[head.head.ids[teeth]])
    error = np.linalg.norm(opened[teeth] - truth, axis=1)
    assert error.max() < 8e-4 and error.mean() < 2e-4
    move = opened[teeth] - closed[teeth]
    lower = np.linalg.norm(move, axis=1) > 1e-3  # 1 mm
    # Half the teeth vertices move; the rest (the upper teeth) not by a hundredth of a millimetre.
    assert lower.sum() == pytest.approx(len(teeth) / 2, rel=0.05)
    assert np.abs(move[~lower]).max() < 1e-5
    # The moving ones are the lower teeth, and they go down: the incisors by over a centimetre.
    assert closed[teeth][lower, 1].mean() < closed[teeth][~lower, 1].mean() - 5e-3
    assert (move[lower, 1] < 0).all() and move[lower, 1].min() < -0.01
    # The jawOpen morph target moves the same vertices by the same (a glTF tool opens the mouth alike).
    target = ict.head_targets.deltas[jaw][teeth] * weights[jaw]
    assert np.abs(target - move).max() < 3 * ZERO_BELOW_M


def test_region_head_has_no_step_at_the_rim(uv_models, kit):
    """A residual ICT's model cannot express (waves of ~3.5 mm over the region) is carried out of the
    region along the mesh: every edge of the head mesh across the region's rim is at most 1.5x the
    longer of the mesh's median edge and its own length on ICT's neutral head (ICT's own neutral has a
    1.08 cm edge across the rim, 4x the median)."""
    model = uv_models[128]
    fit = HeadFit.build(HeadModel.load(), model.topology.to_npz_dict(), 128, model.frame.center, model.frame.scale)
    ict = IctMeshes(fit, CM)
    a = maps(model) + 0.02 * np.sin(np.linspace(0, 6, 128))[None, None, :]
    out, _ = ict.positions("full", a, a, fit.fit(a), "head")
    head = fit.head.head
    edges = np.concatenate([head.triangles[:, [0, 1]], head.triangles[:, [1, 2]], head.triangles[:, [2, 0]]])
    inside = np.isin(head.ids[edges], fit.region_ids)
    across = edges[inside[:, 0] != inside[:, 1]]
    length = np.linalg.norm(out[across[:, 0]] - out[across[:, 1]], axis=1)
    rest = np.linalg.norm(kit.neutral[head.ids[across[:, 0]]] - kit.neutral[head.ids[across[:, 1]]], axis=1) * CM
    median = np.median(np.linalg.norm(out[edges[:, 0]] - out[edges[:, 1]], axis=1))
    assert len(across) > 100
    assert (length / np.maximum(median, rest)).max() <= 1.5
    assert (length / rest).max() <= 1.5


def test_the_head_texture_has_no_holes_and_skin_beyond_the_face():
    from service.engine.texture import GUMS_COLOUR, INTERIOR_COLOUR, TEETH_COLOUR, head_texture

    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[16:48, 16:48] = (180, 130, 110)  # the face's skin
    texture[30:34, 30:34] = (60, 40, 30)  # a brow
    palette = np.array([[0.02, 0.5], [0.98, 0.5], [0.02, 0.98], [0.98, 0.98]])  # skin, interior, teeth, gums
    out = head_texture(texture, mask, palette)
    skin = np.array([180, 130, 110])
    assert np.abs(out[0, 32].astype(int) - skin).max() <= 1 and np.abs(out[63, 63].astype(int) - skin).max() <= 1
    assert np.abs(out[32, 63].astype(int) - INTERIOR_COLOUR * 255).max() <= 1  # the sockets' texel
    assert np.abs(out[1, 0].astype(int) - TEETH_COLOUR * 255).max() <= 1  # the teeth's
    assert np.abs(out[1, 63].astype(int) - GUMS_COLOUR * 255).max() <= 1  # the gums and tongue's
    assert TEETH_COLOUR.min() > 0.7 and GUMS_COLOUR[0] > 2 * GUMS_COLOUR[1]  # off-white; pink-red
    assert np.array_equal(out[31, 31], texture[31, 31])  # the face where the maps are



@pytest.mark.parametrize("size", [64, 128])
def test_the_textures_equal_their_texel_by_texel_arithmetic(size):
    """bleed and head_texture move only what changes and count the median; the result is the plain
    arithmetic over every texel: the nearest inside texel, (1 - fade) t + fade skin, skin the median."""
    from service.engine.texture import (GUMS_COLOUR, INTERIOR_COLOUR, TEETH_COLOUR, _head_fade, _median_u8,
                                        _nearest_inside, bleed, head_texture)

    mask = np.zeros((16, 16), bool)
    mask[3:13, 2:12] = True
    mask[6:8, 4:7] = False  # a hole: the mouth
    palette = np.array([[0.02, 0.5], [0.98, 0.5], [0.02, 0.98], [0.98, 0.98]])
    texture = np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)
    rows, cols = _nearest_inside(size, 16, mask.tobytes())
    assert np.array_equal(bleed(texture, mask), texture[rows, cols])
    inside, fade, tiles = _head_fade(size, 16, mask.tobytes(), palette.tobytes())
    assert 0 < inside.sum() < size * size and ((fade > 0) & (fade < 1)).any() and (fade == 1).any()
    skin = np.median(texture[inside].astype(np.float64), axis=0)
    want = texture[rows, cols] * (1.0 - fade) + skin * fade
    want[tiles == 1] = skin
    want[tiles == 2] = INTERIOR_COLOUR * 255.0
    want[tiles == 3] = TEETH_COLOUR * 255.0
    want[tiles == 4] = GUMS_COLOUR * 255.0
    assert all((tiles == i).any() for i in range(1, 5))
    assert np.array_equal(head_texture(texture, mask, palette), np.clip(want + 0.5, 0, 255).astype(np.uint8))
    # An even count: the mean of the middle two, as np.median.
    assert np.array_equal(_median_u8(np.array([[9, 0], [1, 255], [200, 3], [2, 4]], np.uint8)), [5.5, 3.5])

# --- the decode cut to the output (service.engine.ict_decode) -------------------------------------

def reference_positions(ict, kind, a_full, a_id, coefficients, region):
    """IctMeshes.positions as it was before ict_decode: ICT's whole head, then the output's vertices."""
    fit = ict.fit
    if kind == "full":
        head = fit.joined_cm(a_full, fit.model_cm(coefficients))
    else:
        identity_cm = fit.model_cm(coefficients, with_expression=False)
        head = fit.joined_cm(a_id, identity_cm)
        if kind == "expression":
            head = head + np.nan_to_num(fit.model_cm(coefficients) - identity_cm)
    metres = (head - fit.center) * ict.metres_per_unit
    outer = fit.head.head if region == "head" else fit.head.face
    return metres[outer.ids], metres[fit.head.eyes.ids]


@pytest.mark.parametrize("region", ["face", "head"])
@pytest.mark.parametrize("kind", ["full", "identity", "expression"])
def test_the_output_s_decode_equals_the_whole_head_s(meshes, region, kind):
    """Maps ICT's model cannot express (waves of ~3.5 mm, different in A and A_id), so the residual and
    its spread out of the region and onto the eyeballs matter: the decode cut to the output's vertices
    gives the whole head's at them, to 1e-6 m."""
    model, ict = meshes
    rng = np.random.default_rng(7)
    weights = np.zeros(53)
    weights[rng.choice(53, 5, replace=False)] = rng.uniform(0.3, 1.0, 5)
    wave = np.sin(np.linspace(0, 6, 128))
    a_id = maps(model, rng.standard_normal(100)) + 0.02 * wave[None, :, None]
    a = a_id + maps(model, None, weights) - maps(model) + 0.02 * wave[None, None, :]
    coefficients = ict.fit.fit(a)
    outer, eyes = ict.positions(kind, a, a_id, coefficients, region)
    want_outer, want_eyes = reference_positions(ict, kind, a, a_id, coefficients, region)
    assert outer.dtype == eyes.dtype == np.float32
    assert np.abs(outer - want_outer).max() < 1e-6 and np.abs(eyes - want_eyes).max() < 1e-6
    # The residual moved the output and the eyeballs (else the spread went untested).
    bare = ict.fit.model_cm(coefficients, with_expression=kind != "identity")
    head = ict.fit.head.head if region == "head" else ict.fit.head.face
    assert np.abs(want_outer - frame(ict, bare[head.ids])).max() > 1e-3
    assert np.abs(want_eyes - frame(ict, bare[ict.fit.head.eyes.ids])).max() > 1e-4


def test_region_head_is_a_400_on_a_store_without_ict_taps(tmp_path_factory, kit):
    """A store whose topology has no ICT taps (``ict_vertex_ids``: stores before 0.7.0) outputs the UV
    grid mesh; ``region=head`` there is the caller's problem (400 problem+json), not a 500, and
    ``region=face`` still works."""
    import hashlib
    import json
    import shutil

    from service.app import create_app
    from service.settings import Settings
    from service_fixtures import assert_problem, encode, noise_image, post, ready_client, tiny_store

    root = tmp_path_factory.mktemp("grid_store") / "store"
    shutil.copytree(tiny_store(tmp_path_factory, kit), root)
    folder = root / "tiny" / "0.0.1"
    with np.load(folder / "topology.npz") as d:
        arrays = {k: d[k] for k in d.files if not k.startswith("ict_")}
    assert len(arrays) < len(d.files)
    np.savez(folder / "topology.npz", **arrays)
    data = (folder / "topology.npz").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["topology.npz"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    app = create_app(Settings(model_store=root, job_store=str(tmp_path_factory.mktemp("grid_jobs") / "jobs.db"),
                              default_texture_size=64))
    image, box = encode(noise_image(), "PNG"), "40,30,160,150"
    with ready_client(app) as client:
        assert app.state.engine.topology.ict is None
        body = assert_problem(post(client, image, box=box, format="glb", region="head"), 400)
        assert "region=head" in body["detail"] and "ICT" in body["detail"]
        assert post(client, image, box=box, format="glb", region="face").status_code == 200
