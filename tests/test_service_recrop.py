"""The recrop stage (service.engine.recrop) on the tiny seeded store: the second crop is the service's
crop of the first pass's landmark box, implausible boxes keep the first crop, and the service over
HTTP and the in-process evaluation run the same two passes for a detected face and one for a box."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.engine.align import crop_face
from service.engine.asm_decode import decode_asm
from service.engine.recrop import landmark_box, landmarks_in_photo, recrop
from service.engine.runtime import GEOMETRY_OUTPUTS
from service.engine.topology import MeshTopology
from service.settings import Settings
from service_fixtures import photo_bytes, ready_client
from training.evaluate.inprocess import InProcessModel

SCALE = 1.6


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8)


def face_outputs(topology: MeshTopology, batch: int = 2) -> list[np.ndarray]:
    """Geometry outputs of a plausible face: a smooth bowl-shaped A, turned and shifted a little, at
    about half the crop's width."""
    s = topology.size
    v, u = np.mgrid[-1:1:s * 1j, -1:1:s * 1j]
    a_id = np.stack([u * 0.9, -v * 1.1, 0.3 * (u ** 2 + v ** 2)]).astype(np.float32)
    rows = {
        "a_id": np.repeat(a_id[None], batch, 0),
        "a_exp": np.zeros((batch, 3, s, s), np.float32),
        "p_t": np.zeros((batch, 6), np.float32),
        "p_l": np.zeros((batch, 27), np.float32),
        # yaw, pitch, roll, tx, ty, log_scale
        "p_h": np.array([[0.4, 0.1, -0.1, 0.15, -0.1, np.log(0.5)], [-0.2, 0.0, 0.2, -0.1, 0.2, np.log(0.4)]],
                        np.float32)[:batch],
    }
    return [rows[name] for name in GEOMETRY_OUTPUTS]


def first_pass(photo, boxes, size):
    return [crop_face(photo, box, size, SCALE) for box in boxes]


def test_landmark_box():
    marks = np.array([[3.0, 9.0, 1.0], [7.0, 2.0, -1.0], [5.0, 4.0, 0.0]])
    assert landmark_box(marks) == (3.0, 2.0, 7.0, 9.0)


def test_landmarks_in_photo_are_the_decoded_landmarks(tiny_topology, photo):
    (crop,) = first_pass(photo, [(100.0, 60.0, 180.0, 150.0)], 32)
    row = {name: value[0] for name, value in zip(GEOMETRY_OUTPUTS, face_outputs(tiny_topology, 1))}
    decoded = decode_asm(row, crop, tiny_topology)
    np.testing.assert_allclose(landmarks_in_photo(row, crop, tiny_topology), decoded.landmarks_photo[:, :2], atol=1e-9)


def test_the_second_crop_is_the_service_crop_of_the_landmark_box(tiny_topology, photo):
    boxes = [(100.0, 60.0, 180.0, 150.0), (20.0, 30.0, 90.0, 110.0)]
    crops = first_pass(photo, boxes, 32)
    outputs = face_outputs(tiny_topology)
    second = recrop(photo, boxes, crops, outputs, tiny_topology, SCALE)
    for i, (crop, new) in enumerate(zip(crops, second)):
        row = {name: value[i] for name, value in zip(GEOMETRY_OUTPUTS, outputs)}
        expected = crop_face(photo, landmark_box(landmarks_in_photo(row, crop, tiny_topology)), 32, SCALE)
        assert new.origin == expected.origin and new.step == expected.step
        np.testing.assert_array_equal(new.image, expected.image)
        assert new.origin != crop.origin  # the face sits elsewhere in the first crop, so the crop moved


def test_implausible_landmark_boxes_keep_the_first_crop(tiny_topology, photo):
    boxes = [(100.0, 60.0, 180.0, 150.0)]
    crops = first_pass(photo, boxes, 32)
    collapsed = [o * 0 if name in ("a_id", "a_exp") else o for name, o in zip(GEOMETRY_OUTPUTS, face_outputs(tiny_topology, 1))]
    nan = [o * np.nan if name == "p_h" else o for name, o in zip(GEOMETRY_OUTPUTS, face_outputs(tiny_topology, 1))]
    for outputs in (collapsed, nan):
        (kept,) = recrop(photo, boxes, crops, outputs, tiny_topology, SCALE)
        assert kept is crops[0]
    # a detector box far smaller than the landmarks' (which span tens of pixels here)
    tiny_box = [(100.0, 60.0, 100.0 + 2.0, 62.0)]
    (kept,) = recrop(photo, tiny_box, crops, face_outputs(tiny_topology, 1), tiny_topology, SCALE)
    assert kept is crops[0]
    (moved,) = recrop(photo, boxes, crops, face_outputs(tiny_topology, 1), tiny_topology, SCALE)
    assert moved is not crops[0]


def post_json(client, **options):
    response = client.post("/v1/reconstruct", files={"image": ("photo.jpg", photo_bytes(), "image/jpeg")},
                           data={"format": "json", **options})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("recrop_detected", [True, False, None])
def test_the_service_and_the_evaluation_run_the_same_passes(tiny_model, tmp_path, recrop_detected):
    """A detected face is recropped when the setting says so (None: not after YuNet, the default
    detector), a caller's box never; the in-process model the evaluation scores gives the service's own
    landmarks either way."""
    settings = Settings(model_store=tiny_model.parents[1], recrop_detected=recrop_detected, job_store=str(tmp_path / "jobs.db"))
    rgb = np.asarray(Image.open(io.BytesIO(photo_bytes())).convert("RGB"))
    model = InProcessModel(tiny_model, settings)
    with ready_client(create_app(settings)) as client:
        detected = post_json(client)
        (face,) = detected["faces"]
        assert ("recrop" in detected["timings_ms"]) == bool(recrop_detected)
        np.testing.assert_allclose(face["landmarks68"], model.landmark_predictor(use_detector=True)(rgb, None), atol=2e-3)
        box = ",".join(str(v) for v in face["box"])
        given = post_json(client, box=box)
        assert "recrop" not in given["timings_ms"]
        np.testing.assert_allclose(given["faces"][0]["landmarks68"], model.landmark_predictor()(rgb, face["box"]), atol=2e-3)
