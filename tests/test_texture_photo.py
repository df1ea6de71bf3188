"""The `photo` texture's blend: the photo where the surface is seen facing the camera, the albedo fill
where it is not, and a ramp between them with no step (on a known placed face, turned)."""

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
