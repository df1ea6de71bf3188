"""Mirror averaging (service.engine.mirror) on the tiny seeded store: the sign rules against the real
camera, topology and SH basis, and the averaged service's exact left-right symmetry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from service.engine.align import Crop
from service.engine.asm_decode import decode_asm
from service.engine.mirror import MIRROR_68, SH_SIGNS, mirror_ready, require_mirror_ready, unmirror
from service.engine.runtime import GEOMETRY_OUTPUTS
from service.engine.topology import MeshTopology
from service.model_store import ModelStoreError
from service.settings import Settings
from service_fixtures import noise_image
from training.evaluate.inprocess import InProcessModel
from training.render.shading import sh_basis


def random_outputs(topology: MeshTopology, rng: np.random.Generator, batch: int = 2) -> list[np.ndarray]:
    s = topology.size
    shapes = {"a_id": (batch, 3, s, s), "a_exp": (batch, 3, s, s), "p_t": (batch, 6), "p_l": (batch, 27)}
    out = {k: rng.normal(0, 0.3, shape).astype(np.float32) for k, shape in shapes.items()}
    # yaw, pitch, roll, tx, ty, log_scale: a plausible turned, shifted face
    out["p_h"] = np.array([[0.6, -0.2, 0.15, 0.1, -0.05, -0.3]] * batch, np.float32) * rng.uniform(0.5, 1.5, (batch, 1)).astype(np.float32)
    return [out[name] for name in GEOMETRY_OUTPUTS]


def test_the_tiny_layout_is_mirror_symmetric_and_a_shifted_one_is_not(tiny_topology):
    assert mirror_ready(tiny_topology)
    shifted = dataclasses.replace(tiny_topology, landmarks_uv=tiny_topology.landmarks_uv + (0.5, 0.0))
    assert not mirror_ready(shifted)
    require_mirror_ready(tiny_topology, "tiny")
    with pytest.raises(ModelStoreError, match="FACERECON_MIRROR_AVERAGE=false"):
        require_mirror_ready(shifted, "tiny")


def test_unmirror_is_an_involution(tiny_topology):
    outputs = random_outputs(tiny_topology, np.random.default_rng(0))
    for name, once, twice in zip(GEOMETRY_OUTPUTS, outputs, unmirror(unmirror(outputs))):
        np.testing.assert_array_equal(once, twice, err_msg=name)


def test_unmirrored_outputs_decode_to_the_mirror_image_of_the_face(tiny_topology):
    """Decoded through the service's own camera, the turned-back outputs give every landmark and
    vertex at x -> N - x of its mirror partner: the sign rules match the camera and the UV layout."""
    n = 32
    crop = Crop(image=np.zeros((3, n, n), np.float32), origin=(0.0, 0.0), step=1.0)
    outputs = random_outputs(tiny_topology, np.random.default_rng(1), batch=1)
    face = decode_asm({k: o[0] for k, o in zip(GEOMETRY_OUTPUTS, outputs)}, crop, tiny_topology)
    mirrored = decode_asm({k: o[0] for k, o in zip(GEOMETRY_OUTPUTS, unmirror(outputs))}, crop, tiny_topology)
    expected = face.landmarks_crop[MIRROR_68] * (-1.0, 1.0) + (n, 0.0)
    # landmarks sit between texels: bilinear sampling of these rough random maps magnifies the layout's
    # float rounding (mirror_ready allows 1e-3 texel) to a few 1e-4 crop pixels
    np.testing.assert_allclose(mirrored.landmarks_crop, expected, atol=2e-3)
    yaw, pitch, roll = face.pose_degrees
    np.testing.assert_allclose(mirrored.pose_degrees, (-yaw, pitch, -roll), atol=1e-5)
    # vertices: each vertex's mirror partner (same row, mirrored column) lands at x -> N - x
    index = {(r, c): i for i, (r, c) in enumerate(zip(tiny_topology.rows, tiny_topology.cols))}
    pairs = [(i, index[(r, tiny_topology.size - 1 - c)]) for i, (r, c) in enumerate(zip(tiny_topology.rows, tiny_topology.cols))
             if (r, tiny_topology.size - 1 - c) in index]
    assert len(pairs) > 0.99 * tiny_topology.vertices
    a, b = np.array(pairs).T
    np.testing.assert_allclose(mirrored.screen[b, 0], n - face.screen[a, 0], atol=1e-5)
    np.testing.assert_allclose(mirrored.screen[b, 1:], face.screen[a, 1:], atol=1e-5)


def test_sh_signs_give_the_mirrored_shading():
    """The renderer's SH irradiance of mirrored normals under the turned-back lighting equals the original's."""
    gen = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(50, 3, generator=gen), dim=-1)
    coeffs = torch.randn(9, 3, generator=gen)
    shading = sh_basis(normals) @ coeffs
    mirrored = sh_basis(normals * torch.tensor([-1.0, 1.0, 1.0])) @ (coeffs * torch.from_numpy(SH_SIGNS)[:, None])
    torch.testing.assert_close(mirrored, shading)


def flipped_landmarks(model: InProcessModel, photo: np.ndarray, box) -> np.ndarray:
    w = photo.shape[1]
    x0, y0, x1, y1 = box
    marks = model.landmark_predictor()(np.ascontiguousarray(photo[:, ::-1]), (w - x1, y0, w - x0, y1))
    return marks[MIRROR_68] * (-1.0, 1.0, 1.0) + (w, 0.0, 0.0)


def test_with_mirror_averaging_the_mirrored_photo_gets_the_mirrored_face(tiny_model):
    """Exact symmetry of the averaged service; the plain one (a random tiny network) has none, so
    this cannot pass by accident. The box is chosen so the flipped photo's crop is the flipped crop."""
    photo = np.asarray(noise_image("RGB", (200, 160), seed=3))
    box = (50.0, 40.0, 130.0, 120.0)
    averaged = InProcessModel(tiny_model, Settings(mirror_average=True))
    ours = averaged.landmark_predictor()(photo, box)
    np.testing.assert_allclose(flipped_landmarks(averaged, photo, box), ours, atol=1e-3)
    plain = InProcessModel(tiny_model, Settings(mirror_average=False))
    assert np.abs(flipped_landmarks(plain, photo, box) - plain.landmark_predictor()(photo, box)).max() > 0.1
