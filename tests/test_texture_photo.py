"""The `photo` texture's blend: the photo where the surface is seen facing the camera, the albedo fill
where it is not, and a ramp between them with no step; the photo's detail that `albedo` and `shaded`
carry above the map's size (on a known placed face, turned)."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def placed(tiny_topology, kit):
    """The neutral face turned 0.6 rad (34°): its far cheek hidden, a visibility edge across the UV map."""
    from service.engine.align import Crop
    from service.engine.unwrap import unwrap
    from test_evaluate_texture import placed_face
    from training.facemodel import UVFaceModel

    neutral = UVFaceModel.build(tiny_topology.size, kit).identity_map().transpose(2, 0, 1)
    crop = Crop(np.zeros((3, 64, 64), np.float32), origin=(30.0, 20.0), step=3.0)
    geo = placed_face(neutral, tiny_topology, crop, yaw=0.6)
    return geo, unwrap(geo, tiny_topology)


def test_the_weight_is_zero_unseen_one_inside_and_has_no_step(placed, tiny_topology):
    from service.engine.texture import photo_weight, resize

    geo, unwrapped = placed
    assert 0.2 < unwrapped.visibility[tiny_topology.uv_mask].mean() < 0.95  # both sides of a seam exist
    w = photo_weight(unwrapped, tiny_topology, 256)
    unseen = resize((~unwrapped.visibility & tiny_topology.uv_mask).astype(float), 256) > 0.99
    assert w[unseen].max() < 0.02
    assert (w > 0.99).sum() > 0.2 * (resize(tiny_topology.uv_mask.astype(float), 256) > 0.5).sum()
    mask = resize(tiny_topology.uv_mask.astype(float), 256) > 0.99
    jump = np.maximum(np.abs(np.diff(w, axis=0))[mask[1:] & mask[:-1]].max(),
                      np.abs(np.diff(w, axis=1))[mask[:, 1:] & mask[:, :-1]].max())
    binary = resize(unwrapped.visibility.astype(float), 256)  # the switch it replaces
    before = np.abs(np.diff(binary, axis=1))[mask[:, 1:] & mask[:, :-1]].max()
    assert jump < 0.15 < before  # a ramp of several texels where the switch took one or two


def test_photo_where_seen_fill_matched_to_its_colour_where_not(placed, tiny_topology):
    from service.engine.texture import photo_weight, unwrap_photo

    geo, unwrapped = placed
    size = 128
    photo = np.zeros((300, 300, 3), np.uint8)
    photo[:] = (200, 120, 60)
    rng = np.random.default_rng(0)
    fill = rng.uniform(0.2, 0.6, (size, size, 3))
    out = unwrap_photo(photo, unwrapped, geo, size, fill, tiny_topology)
    w = photo_weight(unwrapped, tiny_topology, size)
    np.testing.assert_allclose(out[w > 0.999], np.broadcast_to([200 / 255, 120 / 255, 60 / 255], out[w > 0.999].shape),
                               atol=2e-3)
    gain = np.array([200, 120, 60]) / 255 / fill[w > 0.5].mean(0)  # the fill brought to the photo's mean colour
    np.testing.assert_allclose(out[w == 0], fill[w == 0] * gain, rtol=0.01)  # (the mean is taken on a subsample)


def test_feathering_softens_the_seam_the_switch_leaves(placed, tiny_topology):
    """A textured photo against a flat dark fill: the plain switch draws an edge sharper than the photo's
    own detail along the visibility's edge; the feathered blend much less so."""
    import cv2

    from service.engine.texture import unwrap_photo
    from training.evaluate.seam import seam_figures

    geo, unwrapped = placed
    rng = np.random.default_rng(1)
    photo = cv2.GaussianBlur(rng.integers(60, 250, (300, 300, 3)).astype(np.uint8), (0, 0), 2.0)
    fill = np.full((256, 256, 3), 0.1)
    figures = {feather: seam_figures(unwrap_photo(photo, unwrapped, geo, 256, fill, tiny_topology, feather),
                                     unwrapped.visibility, tiny_topology.uv_mask) for feather in (True, False)}
    assert figures[False]["seam_texels"] > 50
    assert figures[False]["edge_contrast"] > 1.5 > figures[True]["edge_contrast"] * 1.2
    # The step across is the colour mismatch, which feathering spreads but the fill's gain shrinks.
    assert figures[True]["step"] < figures[False]["step"]


def textured_photo(seed: int) -> np.ndarray:
    """(300, 300, 3) uint8: fine grey texture between about 80 and 200 (a skin's pores at photo scale)."""
    import cv2

    rng = np.random.default_rng(seed)
    grey = cv2.GaussianBlur(rng.uniform(80, 200, (300, 300)).astype(np.float32), (0, 0), 1.5)
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def expected_colour(photo: np.ndarray, placed, topology) -> np.ndarray:
    """(S, S, 3) in [0, 1]: a reconstruction that explains ``photo`` at the map's scale (its colour
    unwrapped at S), as the texture stream and the refitted light do on skin they agree with."""
    from service.engine.texture import sample_photo

    geo, unwrapped = placed
    return sample_photo(photo, unwrapped, geo, topology.size).astype(np.float64) / 255.0


def test_detail_is_the_photos_own_and_ignores_its_exposure(placed, tiny_topology):
    """The factor carries the photo's fine texture where the photo is trusted, and the same photo
    darkened to 55 % (its reconstruction darkened alike, as relight does) gives the same factor."""
    from service.engine.texture import photo_detail, photo_weight

    geo, unwrapped = placed
    size = 4 * tiny_topology.size
    photo = textured_photo(2)
    dark = (photo * 0.55 + 0.5).astype(np.uint8)
    bright = photo_detail(photo, unwrapped, geo, tiny_topology, size, expected_colour(photo, placed, tiny_topology))
    dimmed = photo_detail(dark, unwrapped, geo, tiny_topology, size, expected_colour(dark, placed, tiny_topology))
    trusted = photo_weight(unwrapped, tiny_topology, size) > 0.99
    assert bright[trusted].std() > 0.02  # detail, not a constant
    assert np.abs(bright - dimmed)[trusted].mean() < 0.01  # a ratio: the darkening cancels (to rounding)


def test_a_flat_photo_or_a_small_texture_has_no_detail(placed, tiny_topology):
    from service.engine.texture import photo_detail

    geo, unwrapped = placed
    flat = np.full((300, 300, 3), 150, np.uint8)
    expected = expected_colour(flat, placed, tiny_topology)
    np.testing.assert_allclose(photo_detail(flat, unwrapped, geo, tiny_topology, 128, expected), 1.0, atol=1e-3)
    photo = textured_photo(3)
    small = photo_detail(photo, unwrapped, geo, tiny_topology, tiny_topology.size, expected_colour(photo, placed, tiny_topology))
    assert (small == 1.0).all()


def test_detail_stays_out_where_the_photo_shows_what_the_reconstruction_does_not(placed, tiny_topology):
    """A dark bar across the photo (the frame of a pair of glasses) that the reconstruction's colour
    leaves out: no detail on the bar or at its rim; the photo's texture elsewhere."""
    from service.engine.texture import photo_detail, photo_positions, photo_weight

    geo, unwrapped = placed
    size = 4 * tiny_topology.size
    photo = textured_photo(4)
    expected = expected_colour(photo, placed, tiny_topology)  # the face without the frame
    y = photo_positions(unwrapped, geo, size)[..., 1]
    rows = np.percentile(y[photo_weight(unwrapped, tiny_topology, size) > 0.99], [40, 60])
    framed = photo.copy()
    framed[int(rows[0]):int(rows[1])] = 25
    factor = photo_detail(framed, unwrapped, geo, tiny_topology, size, expected)
    plain = photo_detail(photo, unwrapped, geo, tiny_topology, size, expected)
    trusted = photo_weight(unwrapped, tiny_topology, size) > 0.99
    on_bar = trusted & (y > rows[0] + 2) & (y < rows[1] - 2)
    away = trusted & ((y < rows[0] - 25) | (y > rows[1] + 25))
    assert on_bar.sum() > 100 and away.sum() > 100
    assert np.abs(factor[on_bar] - 1.0).max() < 0.02
    # Beside the bar the photo's local mean is pulled down by it: detail kept there would be a bright halo.
    rim = trusted & (((y > rows[0] - 8) & (y < rows[0] - 2)) | ((y > rows[1] + 2) & (y < rows[1] + 8)))
    assert rim.sum() > 50 and np.abs(factor[rim] - 1.0).mean() < 0.005  # (the mirror side's detail may reach a few)
    assert factor[away].std() > 0.02 and np.abs(factor - plain)[away].mean() < 1e-3  # the texture, as without the bar


def test_compose_without_detail_is_the_map_resized(placed, tiny_topology):
    """detail=False: the map resized alone; with detail, an albedo whose shading explains the photo
    (the agreement holds) takes on the photo's texture."""
    from service.engine.texture import compose_texture, resize, view_shading

    geo, unwrapped = placed
    photo = textured_photo(5)
    shading = np.clip(view_shading(geo, unwrapped, tiny_topology), 0.05, None)
    albedo = np.clip(expected_colour(photo, placed, tiny_topology) / shading, 0, 1).transpose(2, 0, 1)
    size = 4 * tiny_topology.size
    plain = compose_texture("albedo", albedo, geo, unwrapped, tiny_topology, photo, size, detail=False)
    np.testing.assert_array_equal(plain, (np.clip(resize(albedo.transpose(1, 2, 0), size), 0, 1) * 255 + 0.5).astype(np.uint8))
    detailed = compose_texture("albedo", albedo, geo, unwrapped, tiny_topology, photo, size)
    assert np.abs(detailed.astype(int) - plain).max() > 10
    # `photo` is the photo where it is trusted whole, and its fill, the detailed albedo, elsewhere.
    from service.engine.texture import photo_weight

    weight = photo_weight(unwrapped, tiny_topology, size)
    filled = [compose_texture("photo", albedo, geo, unwrapped, tiny_topology, photo, size, d).astype(int) for d in (True, False)]
    assert np.abs(filled[0] - filled[1])[weight > 0.999].max() <= 1
    assert np.abs(filled[0] - filled[1])[weight == 0].max() > 5


def test_the_far_side_of_a_turned_head_takes_the_seen_sides_detail(placed, tiny_topology):
    """The layout is left-right symmetric, so a texel the photo does not show takes its mirror texel's
    detail where that one is seen: the far cheek is as sharp as the near one, not a smooth patch."""
    from service.engine.mirror import mirror_ready
    from service.engine.texture import photo_detail, photo_weight

    assert mirror_ready(tiny_topology)
    geo, unwrapped = placed
    size = 4 * tiny_topology.size
    photo = textured_photo(6)
    factor = photo_detail(photo, unwrapped, geo, tiny_topology, size, expected_colour(photo, placed, tiny_topology))
    weight = photo_weight(unwrapped, tiny_topology, size)
    far = (weight == 0) & (weight[:, ::-1] > 0.99)
    assert far.sum() > 500
    np.testing.assert_allclose(factor[far], factor[:, ::-1][far], atol=1e-6)
    assert factor[far].std() > 0.02


def test_the_detail_is_resolved_at_the_photos_own_scale(tiny_topology, kit):
    """detail_size: about one photo pixel per texel, so the same face twice as large in the photo needs
    twice the size; never below 2 S nor above the size asked for."""
    from service.engine.align import Crop
    from service.engine.texture import detail_size
    from service.engine.unwrap import unwrap
    from test_evaluate_texture import placed_face
    from training.facemodel import UVFaceModel

    neutral = UVFaceModel.build(tiny_topology.size, kit).identity_map().transpose(2, 0, 1)
    sizes = {}
    for step in (3.0, 6.0, 12.0):
        geo = placed_face(neutral, tiny_topology, Crop(np.zeros((3, 64, 64), np.float32), (0.0, 0.0), step), yaw=0.3)
        sizes[step] = detail_size(unwrap(geo, tiny_topology), geo, tiny_topology, 4096)
    assert all(s % 2 == 0 and 2 * tiny_topology.size <= s for s in sizes.values())
    assert sizes[6.0] == pytest.approx(2 * sizes[3.0], rel=0.05) and sizes[12.0] == pytest.approx(4 * sizes[3.0], rel=0.05)
    geo = placed_face(neutral, tiny_topology, Crop(np.zeros((3, 64, 64), np.float32), (0.0, 0.0), 12.0), yaw=0.3)
    assert detail_size(unwrap(geo, tiny_topology), geo, tiny_topology, 100) == 100


def skin_photo(seed: int) -> np.ndarray:
    """(300, 300, 3) uint8: :func:`textured_photo` in a skin's colour (more red than green than blue)."""
    return (textured_photo(seed) * np.array([1.0, 0.75, 0.6]) + 0.5).astype(np.uint8)


def patched(photo: np.ndarray, placed, topology, colour) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``photo`` with a square of ``colour`` over the middle of the seen face, the texels (S, S) well
    inside the square and well away from it, in map texels (both where the photo is trusted whole and
    outside the brows, eyes and mouth, which the skin test leaves alone), and the texels on the square."""
    from scipy import ndimage

    from service.engine.texture import feature_texels, photo_positions, photo_weight

    geo, unwrapped = placed
    xy = photo_positions(unwrapped, geo, topology.size)
    trusted = photo_weight(unwrapped, topology, topology.size) > 0.99
    (x0, x1), (y0, y1) = (np.percentile(xy[..., i][trusted], [25, 75]) for i in (0, 1))
    trusted &= ~feature_texels(topology)
    out = photo.copy()
    out[int(y0):int(y1), int(x0):int(x1)] = colour
    on_patch = (xy[..., 0] > x0) & (xy[..., 0] < x1) & (xy[..., 1] > y0) & (xy[..., 1] < y1)
    # Beyond the test's reach (its local mean, its erosion and the ramp between) on either side.
    inside = trusted & (ndimage.distance_transform_edt(on_patch) > 2)
    away = trusted & (ndimage.distance_transform_edt(~on_patch) > 6)
    return out, inside, away, on_patch


@pytest.mark.parametrize("colour", [(40, 200, 220), (15, 15, 15)], ids=["a blue sky", "a black microphone"])
def test_photo_takes_the_fill_where_the_photo_shows_what_is_not_skin(placed, tiny_topology, colour):
    """A patch the reconstruction does not have, of another hue or far darker than skin: `photo` shows
    the fill there, not the patch, and elsewhere the photo as without the patch; without the skin test
    the patch is copied (the texture before)."""
    from service.engine.texture import skin_trust, unwrap_photo

    geo, unwrapped = placed
    s = tiny_topology.size
    photo = skin_photo(7)
    expected = expected_colour(photo, placed, tiny_topology)  # the face without the patch
    covered, inside, away, _ = patched(photo, placed, tiny_topology, colour)
    assert inside.sum() >= 4 and away.sum() > 50
    trust = skin_trust(covered, unwrapped, geo, tiny_topology, expected)
    assert trust[inside].max() < 0.01 and trust[away].min() > 0.99
    fill = np.full((s, s, 3), 0.5)
    served = unwrap_photo(covered, unwrapped, geo, s, fill, tiny_topology, trust=trust)
    before = unwrap_photo(covered, unwrapped, geo, s, fill, tiny_topology)
    clean = unwrap_photo(photo, unwrapped, geo, s, fill, tiny_topology)
    patch = np.array(colour) / 255.0
    assert np.abs(before[inside] - patch).max() < 0.02  # copied without the test
    assert np.abs(served[inside] - patch).mean(-1).min() > 0.15  # not copied with it: the fill, matched in colour
    np.testing.assert_allclose(served[inside], np.broadcast_to(served[inside][0], served[inside].shape), atol=1e-6)
    # Away from the patch: the photo, as without it (the fill's colour match is the only other change).
    assert np.abs(served[away] - clean[away]).max() < 0.01


def test_the_skin_test_ignores_the_photos_exposure_and_tint(placed, tiny_topology):
    """The face darkened to 55 % and warmed, its reconstruction unchanged: trusted everywhere it is seen,
    as the photo itself is."""
    from service.engine.texture import photo_weight, skin_trust

    geo, unwrapped = placed
    photo = skin_photo(8)
    expected = expected_colour(photo, placed, tiny_topology)
    seen = photo_weight(unwrapped, tiny_topology, tiny_topology.size) > 0
    for changed in (photo, np.clip(photo * np.array([0.55 * 1.1, 0.55, 0.55 * 0.85]) + 0.5, 0, 255).astype(np.uint8)):
        trust = skin_trust(changed, unwrapped, geo, tiny_topology, expected)
        assert trust[seen].min() > 0.99


def test_local_mean_of_colours_is_each_channels_own(placed, tiny_topology):
    from service.engine.texture import local_mean

    rng = np.random.default_rng(9)
    colour = rng.uniform(0, 255, (64, 64, 3)).astype(np.float32)
    weight = rng.uniform(0, 1, (64, 64)).astype(np.float32)
    for sigma in (1.0, 3.0):  # at full resolution, and at half
        together = local_mean(colour, weight, sigma)
        np.testing.assert_allclose(together, np.stack([local_mean(colour[..., c], weight, sigma) for c in range(3)], -1),
                                   rtol=1e-5, atol=1e-3)


def test_the_skin_test_leaves_the_eyes_brows_and_mouth_to_the_photo(placed, tiny_topology):
    """A blue square over the middle of the face: not trusted, but over the brows, eyes and mouth under
    it, where the photo's dark lashes, blue irises and white teeth are the face's own."""
    from service.engine.texture import feature_texels, skin_trust

    geo, unwrapped = placed
    photo = skin_photo(10)
    covered, inside, _, on_patch = patched(photo, placed, tiny_topology, (60, 110, 200))
    trust = skin_trust(covered, unwrapped, geo, tiny_topology, expected_colour(photo, placed, tiny_topology))
    features = feature_texels(tiny_topology) & unwrapped.visibility
    assert (features & on_patch).sum() > 10 and inside.sum() >= 4
    assert (trust[features] == 1.0).all() and trust[inside].max() < 0.01


def test_under_a_blue_light_the_whole_face_is_still_skin(placed, tiny_topology):
    """A face lit blue fails the hue test everywhere, which says the light is coloured, not that the face
    is sky: the hue test stands down and the face stays trusted; a black patch is still caught."""
    from service.engine.texture import skin_trust

    geo, unwrapped = placed
    blue = np.clip(skin_photo(11) * np.array([0.55, 0.8, 1.5]) + 0.5, 0, 255).astype(np.uint8)
    expected = expected_colour(blue, placed, tiny_topology)
    covered, inside, away, _ = patched(blue, placed, tiny_topology, (15, 15, 15))
    trust = skin_trust(covered, unwrapped, geo, tiny_topology, expected)
    assert trust[away].min() > 0.99 and trust[inside].max() < 0.01
