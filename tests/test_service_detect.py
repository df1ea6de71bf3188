"""Face detection over HTTP: the real app with YuNet (the default detector) on real photos, a tiny
seeded model store behind it (its landmarks are meaningless; the boxes are the detector's)."""

from __future__ import annotations

import hashlib
import io
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.engine.detect import (ACROSS, YUNET_SHA256, YUNET_TO_LANDMARK_BOX, YUNET_TURN, YuNetDetector,
                                   detection_scale, unmirror, unturn, yunet_face, yunet_turn)
from service.settings import Settings
from service_fixtures import assert_problem, encode, noise_image, photo_bytes, post, ready_client, tiny_store

YUNET = Settings().yunet_path


@pytest.fixture(scope="module")
def client(tmp_path_factory, kit):
    store = tiny_store(tmp_path_factory, kit)
    app = create_app(Settings(model_store=store, default_texture_size=16,
                              job_store=str(tmp_path_factory.mktemp("jobs") / "jobs.db")))
    with ready_client(app) as test_client:
        yield test_client


def faces_of(client, data: bytes, **options) -> list[dict]:
    response = post(client, data, format="json", **options)
    assert response.status_code == 200, response.text
    return response.json()["faces"]


def area(face: dict) -> float:
    x0, y0, x1, y1 = face["box"]
    return (x1 - x0) * (y1 - y0)


def test_the_shipped_detector_file_is_the_published_one():
    assert hashlib.sha256(YUNET.read_bytes()).hexdigest() == YUNET_SHA256
    assert "Shiqi Yu" in (YUNET.parent / "LICENSE").read_text()


@pytest.mark.parametrize("name", ["trump_hillary.jpg", "breakingbad.jpg"])
def test_every_face_with_faces_all_largest_first(client, name):
    faces = faces_of(client, photo_bytes(name), faces="all")
    assert len(faces) == 2
    assert all(f["detector"] == "yunet" and 0.5 <= f["score"] <= 1 for f in faces)
    assert area(faces[0]) >= area(faces[1])
    x_centres = sorted((f["box"][0] + f["box"][2]) / 2 for f in faces)
    assert x_centres[1] - x_centres[0] > 300  # two people side by side, not one face found twice
    (largest,) = faces_of(client, photo_bytes(name))
    assert largest["box"] == faces[0]["box"]


def test_largest_face_in_einstein_is_einstein(client):
    """Einstein's face (~110 px, his 68 landmarks centred near (407, 332)) is larger than the seated man's (~50 px)."""
    (face,) = faces_of(client, photo_bytes("einstein.jpg"))
    x0, y0, x1, y1 = face["box"]
    assert x0 < 407 < x1 and y0 < 332 < y1 and x1 - x0 > 80


def test_tiny_face_in_a_large_photo(client):
    """A face of ~50 px (just above min_face_px = 40) in the middle of a 640x480 grey photo."""
    photo = Image.open(io.BytesIO(photo_bytes("trump.jpg"))).convert("RGB").crop((260, 60, 490, 350))
    small = photo.resize((60, 76), Image.LANCZOS)
    canvas = Image.new("RGB", (640, 480), (120, 120, 120))
    canvas.paste(small, (300, 200))
    (face,) = faces_of(client, encode(canvas, "PNG"), faces="all")
    x0, y0, x1, y1 = face["box"]
    assert 290 < (x0 + x1) / 2 < 370 and 190 < (y0 + y1) / 2 < 290 and 35 < x1 - x0 < 80


def test_exif_rotated_photo_is_detected_upright(client):
    """The same photo stored sideways with EXIF orientation 6 (rotate 90° clockwise to display): the
    face is found where it is in the displayed (upright) photo."""
    upright = Image.open(io.BytesIO(photo_bytes("trump.jpg"))).convert("RGB")
    (expected,) = faces_of(client, encode(upright, "JPEG", quality=95))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise; orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    (face,) = faces_of(client, encode(stored, "JPEG", quality=95, exif=exif))
    np.testing.assert_allclose(face["box"], expected["box"], atol=6)


@pytest.mark.parametrize("image", [Image.new("RGB", (640, 480), (128, 128, 128)), noise_image(size=(640, 480))],
                         ids=["blank", "noise"])
def test_no_face_is_422(client, image):
    body = assert_problem(post(client, encode(image, "PNG"), format="json"), 422, "no-face")
    assert "pass `box`" in body["detail"]


def test_a_face_lying_on_its_side_is_found_by_the_turned_retry():
    """YuNet misses faces turned a quarter; the retry on the turned copy finds them, boxed in the photo's frame."""
    upright = np.asarray(Image.open(io.BytesIO(photo_bytes("trump.jpg"))).convert("RGB"))
    detector = YuNetDetector(YUNET, score_threshold=0.8)
    (expected,) = detector(upright)
    lying = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)
    faces = detector(lying)
    assert len(faces) == 1
    x0, y0, x1, y1 = expected.box  # (x, y) upright -> (y, W - x) lying
    w = upright.shape[1]
    np.testing.assert_allclose(faces[0].box, (y0, w - x1, y1, w - x0), atol=8)


def test_unturn_maps_points_and_boxes_back():
    """A box and a point found on a 60 x 100 image turned clockwise come back where they were."""
    image = np.zeros((60, 100), np.uint8)
    image[5:15, 30:70] = 1  # x 30-70, y 5-15
    ys, xs = np.nonzero(cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE))
    row = np.zeros((1, 15))
    row[0, :4] = xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
    row[0, 4:6] = 60 - 5, 30  # the box's top-left corner (30, 5) as the turned image has it
    back = unturn(row, cv2.ROTATE_90_CLOCKWISE, 60, 100)[0]
    np.testing.assert_allclose(back[:4], (30, 5, 40, 10))
    np.testing.assert_allclose(back[4:6], (30, 5))


def test_unmirror_flips_boxes_and_swaps_left_and_right():
    """A row found on a 100-px-wide mirrored image: its box and points come back flipped, the eyes and
    mouth corners swapped so that the first point is again the face's right eye (the image's left)."""
    row = np.zeros((1, 15))
    row[0, :4] = 10, 20, 30, 40  # x 10-40 on the mirror
    row[0, 4:14] = [15, 30, 35, 30, 25, 40, 18, 50, 32, 50]
    back = unmirror(row, 100)[0]
    np.testing.assert_allclose(back[:4], (60, 20, 30, 40))  # x 60-90
    np.testing.assert_allclose(back[4:14], [65, 30, 85, 30, 75, 40, 68, 50, 82, 50])
    np.testing.assert_allclose(unmirror(unmirror(row, 100), 100), row)


def test_the_mirrored_retry_boxes_the_face_where_it_is():
    """The same photo searched mirrored gives the same face, boxed in the photo's own frame."""
    photo = np.asarray(Image.open(io.BytesIO(photo_bytes("trump.jpg"))).convert("RGB"))
    detector = YuNetDetector(YUNET, score_threshold=0.8)
    factor = detection_scale(*photo.shape[:2], detector.min_face_px, detector.max_side)
    (upright,), (mirrored,) = detector._run(photo, factor), detector._run(photo, factor, mirrored=True)
    side = upright[2]  # YuNet is not mirror-symmetric: the two searches differ by a few % of the box
    np.testing.assert_allclose(mirrored[:4], upright[:4], atol=0.04 * side)
    np.testing.assert_allclose(mirrored[4:14], upright[4:14], atol=0.08 * side)  # a flip would be ~half a side off


def yunet_row(nose_dx: float, lying: bool = False) -> np.ndarray:
    """A YuNet row: a 100 x 100 box at (100, 100), eyes 40 px apart, the nose ``nose_dx`` eye distances
    from their midpoint along the eye line; ``lying``: the same face turned a quarter (eye line vertical)."""
    eyes_mid, along, down = np.array([150.0, 140.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0])
    if lying:
        along, down = np.array([0.0, -1.0]), np.array([1.0, 0.0])
    points = [eyes_mid - 20 * along, eyes_mid + 20 * along, eyes_mid + 40 * nose_dx * along + 20 * down,
              eyes_mid - 15 * along + 40 * down, eyes_mid + 15 * along + 40 * down]
    return np.r_[100.0, 100.0, 100.0, 100.0, np.ravel(points), 0.9]


def centre_and_side(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0]


def test_the_crop_box_follows_the_heads_turn():
    """A frontal face: the calibrated box (side 0.783, 0.116 lower); the nose half an eye distance to the
    right: moved right by dx * 0.5 of that side and 0.05 * 0.5 smaller; to the left: the mirror image."""
    rule, turn = YUNET_TO_LANDMARK_BOX, YUNET_TURN
    assert yunet_turn(yunet_row(0.0)[4:14].reshape(5, 2)) == pytest.approx(0.0)
    assert yunet_turn(yunet_row(0.5)[4:14].reshape(5, 2)) == pytest.approx(0.5)
    frontal = centre_and_side(yunet_face(yunet_row(0.0), 640, 480).crop_box)
    assert frontal == pytest.approx((150, 150 + 100 * rule["dy"], 100 * rule["side"]))
    cx, cy, side = centre_and_side(yunet_face(yunet_row(0.5), 640, 480).crop_box)
    assert cx - 150 == pytest.approx(turn["dx"] * 0.5 * 100 * rule["side"]) and cx > 150
    assert cy == pytest.approx(frontal[1]) and side == pytest.approx(frontal[2] * (1 + turn["side"] * 0.5))
    assert side < frontal[2]
    mirrored = centre_and_side(yunet_face(yunet_row(-0.5), 640, 480).crop_box)
    assert mirrored == pytest.approx((300 - cx, cy, side))
    # past max_turn (a profile whose eyes nearly meet) the box moves and shrinks no further
    far, farther = (centre_and_side(yunet_face(yunet_row(t), 640, 480).crop_box) for t in (turn["max_turn"], 5.0))
    assert far == pytest.approx(farther)
    # coinciding eyes (a degenerate row): no turn
    row = yunet_row(0.5)
    row[6:8] = row[4:6]
    assert yunet_turn(row[4:14].reshape(5, 2)) == 0.0


def test_the_turn_of_a_face_found_on_a_turned_copy_is_measured_across_that_face():
    """A face lying on its side, found on the copy turned clockwise (its left-right axis the photo's -y):
    the same turn as upright, the crop box moved along that axis (here up), not sideways."""
    across = ACROSS[cv2.ROTATE_90_CLOCKWISE]
    lying = yunet_row(0.25, lying=True)
    assert yunet_turn(lying[4:14].reshape(5, 2), across) == pytest.approx(0.25)
    assert yunet_turn(lying[4:14].reshape(5, 2)) == pytest.approx(0.5)  # along x: the nose's drop below the eyes
    frontal = centre_and_side(yunet_face(yunet_row(0.0, lying=True), 640, 480, across).crop_box)
    cx, cy, side = centre_and_side(yunet_face(lying, 640, 480, across).crop_box)
    assert cx == pytest.approx(frontal[0]) and frontal[1] - cy == pytest.approx(YUNET_TURN["dx"] * 0.25 * 100 * 0.783)
    # the calibration's "lower" is towards the lying face's chin, the photo's +x for this turn
    assert frontal[:2] == pytest.approx((150 + 100 * YUNET_TO_LANDMARK_BOX["dy"], 150))
    # ACROSS is the turned copy's x axis brought back by unturn: a step along it on the copy
    for turn, vector in ACROSS.items():
        if turn is not None:
            row = np.zeros((1, 15))
            row[0, 4:8] = 10, 20, 11, 20  # a point and its neighbour one pixel along x on the 50 x 40 turned copy
            back = unturn(row, turn, 40, 50)[0]
            np.testing.assert_allclose(back[6:8] - back[4:6], vector)


def test_detection_scale_rule():
    assert detection_scale(480, 640, 40, 640) == pytest.approx(0.8)  # a 40-px face stays at 32 px
    assert detection_scale(3000, 4000, 40, 640) == pytest.approx(0.16)  # the long side capped at 640
    assert detection_scale(100, 100, 20, 640) == 1.0  # never enlarged


@pytest.mark.parametrize("damage", ["altered", "missing"])
def test_start_up_refuses_a_corrupted_or_missing_detector_file(tmp_path, tmp_path_factory, kit, damage):
    store = tiny_store(tmp_path_factory, kit)
    path = tmp_path / "yunet.onnx"
    if damage == "altered":
        data = bytearray(YUNET.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    app = create_app(Settings(model_store=store, yunet_path=path, job_store=str(tmp_path / "jobs.db")))
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while app.state.load_error is None and time.monotonic() < deadline:
            assert app.state.engine is None
            time.sleep(0.05)
        error = app.state.load_error
        assert error and str(path) in error
        assert ("altered or corrupt" in error) if damage == "altered" else ("cannot be read" in error)
        assert_problem(client.get("/v2/health/ready"), 503, "not-ready")
        assert_problem(post(client, encode(noise_image(), "PNG"), format="json", box="10,10,150,150"), 503)


def test_dlib_detectors_are_settings(tmp_path, tmp_path_factory, kit):
    store = tiny_store(tmp_path_factory, kit)
    app = create_app(Settings(model_store=store, detector="hog", default_texture_size=16,
                              job_store=str(tmp_path / "jobs.db")))
    with ready_client(app) as client:
        (face,) = faces_of(client, photo_bytes("trump.jpg"))
    assert face["detector"] == "hog"


def test_downscale_of_a_large_photo_is_close_to_area_averaging():
    """The fast two-step downscale (bilinear to twice the size, then area by 2) of a 4000x3000 photo
    gives the 640x480 copy and factor asked for, within a few grey levels of plain area-averaging."""
    from service.engine.detect import downscale

    y, x = np.mgrid[0:3000, 0:4000]
    photo = np.stack([(x * 7 + y * 3) % 256, (x // 9) % 256, (y // 5) % 256], -1).astype(np.uint8)
    small, factor = downscale(photo, 0.16)
    assert small.shape == (480, 640, 3) and factor == pytest.approx(0.16)
    reference = cv2.resize(photo, (640, 480), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(float) - reference).mean() < 8
    assert downscale(photo, 1.5)[0] is photo
