"""training.fitting: landmark fit on synthetic faces, jaw contour marching, .pts loader, UV unwrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from training.facemodel import UVFaceModel
from training.fitting import (FitSettings, LandmarkFitter, UVUnwrapper, list_samples, nme, pose_in_crop, pose_to_p_h, project,
                              read_pts, rotation_to_euler, write_pts)
from training.fitting.contour import JAW
from training.models.pose import pose_to_camera
from training.render import RenderSettings, WeakPerspectiveCamera, euler_to_rotation, render_mesh

IMAGE = 400.0


@pytest.fixture(scope="module")
def model(kit) -> UVFaceModel:
    return UVFaceModel.build(64, kit)


@pytest.fixture(scope="module")
def fitter(model) -> LandmarkFitter:
    return LandmarkFitter(model)


def synthetic_targets(fitter: LandmarkFitter, yaw_degrees, seed=0):
    """Known faces and poses -> (targets (B, 68, 2), pose (B, 6), image sizes (B, 2)).

    Annotators put the jaw points of the side turned away on the silhouette, so the targets use
    the silhouette vertex of each jaw parallel there (and ICT's fixed vertices elsewhere)."""
    rng = np.random.default_rng(seed)
    b = len(yaw_degrees)
    ids = rng.standard_normal((b, 100)) * 0.7
    exp = np.zeros((b, 53))
    exp[:, 0:53:7] = rng.uniform(0, 0.4, (b, 8))  # a handful of active blendshapes
    pose = np.stack([np.deg2rad(yaw_degrees), rng.normal(0, 0.1, b), rng.normal(0, 0.1, b),
                     rng.normal(0, 8, b), rng.normal(0, 8, b), rng.uniform(150, 200, b)], 1)
    coeffs = torch.from_numpy(np.concatenate([ids, exp], 1))
    local = torch.from_numpy(fitter._local(fitter.landmarks68))[None].repeat(b, 1)
    cand = fitter.points(coeffs)[:, fitter.candidate_index]
    jaw = fitter.contour.select(cand, torch.from_numpy(pose[:, 0]), torch.from_numpy(pose[:, 1]))
    local[:, JAW] = fitter._local(jaw)
    hw = np.full((b, 2), IMAGE)
    targets = project(fitter.points(coeffs, local), torch.from_numpy(pose), torch.from_numpy(hw)).numpy()
    return targets, pose, hw, jaw.numpy()


def test_fit_recovers_pose_and_landmarks(fitter):
    targets, pose, hw, _ = synthetic_targets(fitter, [0.0, 15.0, -25.0])
    fit = fitter.fit(targets, hw)
    assert np.all(fit.nme < 0.01), fit.nme  # the priors pull a little: < 1 % of the face box
    assert np.all(np.abs(np.rad2deg(fit.pose[:, :3] - pose[:, :3])) < 2.0)
    assert np.allclose(fit.pose[:, 5], pose[:, 5], rtol=0.06)
    assert np.all((fit.exp_weights >= 0) & (fit.exp_weights <= 1))
    np.testing.assert_allclose(fit.nme, nme(fit.landmarks, targets), rtol=1e-4)


def test_contour_marching_matters_at_45_degrees(model, fitter):
    targets, pose, hw, jaw = synthetic_targets(fitter, [45.0, -45.0], seed=1)
    # The silhouette points really differ from ICT's fixed jaw vertices on the side turned away.
    away = np.where(pose[:, :1] > 0, fitter.contour.side[None] > 0, fitter.contour.side[None] < 0)
    assert (jaw != fitter.contour.fixed[None])[away].mean() > 0.7
    marched = fitter.fit(targets, hw)
    fixed = LandmarkFitter(model, FitSettings(contour=False)).fit(targets, hw)
    assert np.all(marched.nme < 0.01), marched.nme
    assert np.all(marched.nme < 0.75 * fixed.nme), (marched.nme, fixed.nme)
    assert np.all(np.abs(np.rad2deg(marched.pose[:, 0] - pose[:, 0])) < 3.0)
    assert np.all(np.abs(np.rad2deg(marched.pose[:, 0] - pose[:, 0])) < np.abs(np.rad2deg(fixed.pose[:, 0] - pose[:, 0])))


def test_pose_convention_matches_renderer_and_p_h(fitter):
    angles = torch.tensor([[0.4, -0.2, 0.3], [-1.2, 0.5, -0.7]], dtype=torch.float64)
    rot = euler_to_rotation(angles[:, 0], angles[:, 1], angles[:, 2])
    assert torch.allclose(rotation_to_euler(rot), angles, atol=1e-9)
    # The pixel pose and the network's image-relative p_h put points at the same pixels.
    pose = np.array([[0.4, -0.2, 0.3, 12.0, -7.0, 150.0]])
    pts = fitter.mean[None, :50].float()
    ours = project(pts.double(), torch.from_numpy(pose), torch.tensor([[256.0, 256.0]]))
    p_h = torch.from_numpy(pose_to_p_h(pose, 256)).float()
    theirs = pose_to_camera(p_h, 256).transform_points_screen(pts)[..., :2]
    assert torch.allclose(ours.float(), theirs, atol=1e-3)
    # A square crop (x0, y0, side) resized to 128 px sees the same points moved and scaled.
    photo_pose = np.array([0.4, -0.2, 0.3, 12.0, -7.0, 150.0])
    in_photo = project(pts.double(), torch.from_numpy(photo_pose[None]), torch.tensor([[300.0, 260.0]]))
    crop = pose_in_crop(photo_pose, (300, 260), (40.0, 70.0, 180.0), 128)
    in_crop = project(pts.double(), torch.from_numpy(crop[None]), torch.tensor([[128.0, 128.0]]))
    expected = (in_photo - torch.tensor([40.0, 70.0], dtype=torch.float64)) * (128 / 180.0)
    assert torch.allclose(in_crop, expected, atol=1e-6)


def test_read_pts_converts_to_pixel_centres(tmp_path):
    pts = np.stack([np.arange(68) + 1.0, np.arange(68) * 2 + 1.0], 1)  # 1-based: first pixel centre = (1, 1)
    body = "\n".join(f"{x} {y}" for x, y in pts)
    (tmp_path / "a.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    got = read_pts(tmp_path / "a.pts")
    assert got.shape == (68, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], [0.5, 0.5])  # the renderer's centre of pixel (0, 0)
    np.testing.assert_allclose(got, pts - 0.5)
    write_pts(tmp_path / "b.pts", got)
    np.testing.assert_allclose(read_pts(tmp_path / "b.pts"), got, atol=1e-3)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "bad.pts").write_text("version: 1\nn_points: 3\n{\n1 2\n}\n")
    with pytest.raises(ValueError):
        read_pts(tmp_path / "bad.pts")
    samples = list_samples(tmp_path)
    assert [s.name for s in samples] == ["a"] and samples[0].image.name == "a.png"


def test_unwrap_recovers_rendered_texture(model):
    unwrapper = UVUnwrapper(model)
    s = model.size
    # A smooth known texture over the UV square.
    yy, xx = np.mgrid[0:s, 0:s] / s
    texture = np.stack([0.5 + 0.4 * np.sin(3 * xx), 0.5 + 0.4 * np.cos(2 * yy), 0.3 + 0.5 * xx * yy], -1)
    colours = torch.from_numpy(texture[model.layout.pixels[:, 0], model.layout.pixels[:, 1]].astype(np.float32))
    rng = np.random.default_rng(3)
    a_id, a_exp = unwrapper.pixel_points(rng.standard_normal((1, 100)) * 0.5, np.zeros((1, 53)))
    points = (a_id + a_exp)[0]
    h, w = 200, 180
    for yaw in (20.0, 60.0):
        pose = np.array([np.deg2rad(yaw), 0.1, -0.05, 3.0, -4.0, 150.0], np.float32)
        rot = euler_to_rotation(*(torch.tensor([v]) for v in pose[:3]))
        cam = WeakPerspectiveCamera(rot, torch.from_numpy(pose[None, 5]), torch.from_numpy(pose[None, 3:5]), (h, w))
        out = render_mesh(points[None], unwrapper.faces, cam, RenderSettings(image_size=(h, w)), vertex_colors=colours)
        photo = (out.image[0].numpy() * 255).round().astype(np.uint8)
        got, visible = unwrapper.unwrap(photo, points, pose)
        assert visible.sum() > 0.3 * model.layout.mask.sum()
        assert not visible[~model.layout.mask].any()
        err = np.abs(got[visible] / 255.0 - texture[visible])
        assert np.median(err) < 0.01 and np.percentile(err, 95) < 0.05, (yaw, np.median(err), np.percentile(err, 95))
        assert (got[~visible] == 0).all()
        if yaw == 20.0:
            seen_20 = visible.sum()
    # Turning further hides more of the far side.
    assert visible.sum() < seen_20
