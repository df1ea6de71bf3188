"""The reconstruction sheet: the canonical-frame renders of each texture mode, and the CLI on the tiny store."""

import shutil

import numpy as np
import pytest

from service_fixtures import PHOTOS, noise_image

DATA = PHOTOS.parent / "aflw2000-dev"


@pytest.fixture(scope="module")
def model(tiny_model):
    from training.evaluate.inprocess import InProcessModel

    return InProcessModel(tiny_model)


@pytest.fixture(scope="module")
def neutral(model, kit):
    """The neutral face's (V, 3) canonical vertices on the tiny store's topology."""
    from training.facemodel import UVFaceModel

    topo = model.topology
    return UVFaceModel.build(topo.size, kit).identity_map()[topo.rows, topo.cols].astype(np.float64)


def test_a_flat_texture_renders_flat_on_grey_centred_and_narrower_when_turned(model, neutral):
    from training.evaluate.sheet import BACKGROUND, render_textures

    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 200
    front, turned = (render_textures(neutral, model.topology, [red], 96, yaw)[0] for yaw in (0.0, 45.0))
    grey = round(BACKGROUND * 255)
    for image in (front, turned):
        covered = np.any(image != grey, -1)
        assert 0.15 < covered.mean() < 0.8  # the face fills the panel without spilling over it
        np.testing.assert_array_equal(image[covered], [[200, 0, 0]] * int(covered.sum()))  # unlit: the texture as is
        assert (image[~covered] == grey).all()
    cols = np.nonzero(np.any(front != grey, -1).any(0))[0]
    assert abs((cols.min() + cols.max() + 1) / 2 - 48) < 6  # the canonical origin at the panel's centre
    width = lambda image: np.ptp(np.nonzero(np.any(image != grey, -1).any(0))[0])  # noqa: E731
    assert width(turned) < width(front)  # seen at 45° the face is narrower than front-on


def test_a_row_holds_the_crop_then_each_mode_per_view(model, kit):
    """The tiny store's geometry is meaningless (its mesh may fall outside the panel), so the row is drawn
    for a known reconstruction: the neutral face placed in the photo, a grey albedo."""
    from service.engine.align import crop_face
    from service.engine.unwrap import unwrap
    from test_evaluate_texture import placed_face
    from training.evaluate.inprocess import Reconstruction
    from training.evaluate.rendered import Photo
    from training.evaluate.sheet import column_titles, sheet_row
    from training.facemodel import UVFaceModel

    image = np.asarray(noise_image(size=(200, 160), seed=3))
    box = (40.0, 30.0, 150.0, 140.0)
    landmarks = np.array([box[:2], box[2:]] * 34)  # only their box matters
    crop = crop_face(image, box, model.model.store.input_size, model.settings.crop_scale)
    neutral_map = UVFaceModel.build(model.topology.size, kit).identity_map().transpose(2, 0, 1)
    geo = placed_face(neutral_map, model.topology, crop, yaw=0.3)
    grey = np.full((3, model.topology.size, model.topology.size), 0.6)
    rec = Reconstruction(box, "landmarks", geo, unwrap(geo, model.topology), grey, None)
    row = sheet_row(model, Photo("noise", image, landmarks), panel=64, rec=rec, texture_size=64)
    assert len(row.panels) == len(column_titles()) == 7 and row.label.startswith("noise (yaw ")
    assert all(p.shape == (64, 64, 3) and p.dtype == np.uint8 for p in row.panels)
    crop = crop_face(image, (40.0, 30.0, 150.0, 140.0), 64, model.settings.crop_scale)
    np.testing.assert_array_equal(row.panels[0], (crop.image.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8))
    albedo, shaded, photo = row.panels[1], row.panels[3], row.panels[5]
    assert not np.array_equal(albedo, photo) and not np.array_equal(albedo, shaded)


def test_sheet_cli_writes_a_row_per_photo_and_turned_head(tiny_model, tmp_path):
    if not (PHOTOS / "takeo.pts").is_file() or not DATA.is_dir():
        pytest.skip(f"real photos or AFLW2000-3D dev absent under {PHOTOS.parent}")
    from PIL import Image

    from training.evaluate.__main__ import main
    from training.evaluate.sheet import turned_aflw_photos

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("takeo.ppm", "takeo.pts"):
        shutil.copy(PHOTOS / name, folder / name)
    turned = turned_aflw_photos(DATA, 2)
    assert len(turned) == 2 and all(p.landmarks.shape == (68, 2) for p in turned)
    out = tmp_path / "sheet.png"
    main(["sheet", "--model", str(tiny_model), "--photos", str(folder), "--aflw", str(DATA), "--turned", "2",
          "--panel", "48", "--out", str(out)])
    with Image.open(out) as image:
        assert image.size == (7 * 48 + 8 * 4, 24 + 3 * (48 + 4) + 4)
