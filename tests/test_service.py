"""The service over HTTP: the real app, real onnxruntime sessions on a tiny seeded model store,
real dlib on a real photo, real trimesh reading the meshes back."""

from __future__ import annotations

import contextlib
import io
import json
import struct
import threading
import time
import zipfile
import zlib

import numpy as np
import pytest
import trimesh
from PIL import Image

from service.app import create_app
from service.engine.batching import MicroBatcher
from service.engine.decode import decode_image
from service.engine.head import HeadModel
from service.settings import Settings
from service_fixtures import (
    PROBLEM, assert_problem, encode, noise_image, photo_bytes, photo_path, post, ready_client, tiny_store,
)


@pytest.fixture(scope="session")
def store_root(tmp_path_factory, kit):
    return tiny_store(tmp_path_factory, kit)


@pytest.fixture(scope="session")
def client(store_root, tmp_path_factory):
    app = create_app(Settings(model_store=store_root, default_texture_size=128, queue_size=4,
                              job_store=str(tmp_path_factory.mktemp("jobs") / "jobs.db")))
    with ready_client(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def topology(store_root):
    return np.load(store_root / "tiny" / "0.0.1" / "topology.npz")


@pytest.fixture(scope="session")
def photo() -> bytes:
    return photo_bytes()


# --- health, metadata, headers ---------------------------------------------------------------------

def test_health_and_model_headers(client):
    live = client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"})
    assert live.status_code == 200 and live.json() == {"live": True}
    assert live.headers["X-Request-ID"] == "abc-123"
    assert live.headers["X-Model-Name"] == "tiny" and live.headers["X-Model-Version"] == "0.0.1"
    assert client.get("/v2/health/ready").json()["ready"] is True
    assert len(client.get("/v2/health/live").headers["X-Request-ID"]) == 32  # generated when absent


def test_model_metadata(client):
    meta = client.get("/v2/models/tiny").json()
    assert meta["name"] == "tiny" and meta["versions"] == ["0.0.1"]
    assert meta["inputs"][0] == {"name": "image", "datatype": "FLOAT32", "shape": [-1, 3, 32, 32]}
    assert [o["name"] for o in meta["parts"]["texture"]["outputs"]] == ["albedo", "linear_albedo"]
    assert meta["providers"] == ["CPUExecutionProvider"]
    assert_problem(client.get("/v2/models/other"), 404, "not-found")


def test_unknown_route_and_method_are_problems(client):
    response = assert_problem(client.get("/nowhere"), 404)
    assert response["instance"] == "/nowhere"
    wrong = client.get("/v1/reconstruct")
    assert_problem(wrong, 405)
    assert wrong.headers["X-Model-Name"] == "tiny"


# --- reconstruction --------------------------------------------------------------------------------

def test_json_figures_on_a_real_photo(client, photo, topology):
    response = post(client, photo, format="json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "tiny", "version": "0.0.1"}
    (face,) = body["faces"]
    assert face["detector"] == "yunet" and face["score"] > 0
    x0, y0, x1, y1 = face["box"]
    assert 0 <= x0 < x1 <= 413 and 0 <= y0 < y1 <= 551
    assert len(face["landmarks68"]) == 68 and all(len(p) == 3 for p in face["landmarks68"])
    assert set(face["pose"]) == {"yaw", "pitch", "roll", "translation", "scale"}
    # The manifest carries no expression names, so the weights are keyed by index.
    assert len(face["blendshapes"]) == topology["expression_basis"].shape[0] == 53
    assert all(0.0 <= w <= 1.0 for w in face["blendshapes"].values())
    assert np.array(face["lighting"]).shape == (9, 3)
    assert 0.0 < face["quality"]["texture_coverage"] <= 1.0
    assert face["quality"]["landmark_agreement"] >= 0.0
    stages = {"decode", "detect", "align", "geometry", "decode_asm", "unwrap", "albedo_fit", "texture", "relight", "compose",
              "fuse", "export"}
    assert stages <= set(body["timings_ms"])


@pytest.mark.parametrize("texture", ["albedo", "shaded", "photo"])
def test_glb_loads_back_with_topology_counts_and_texture(client, photo, topology, texture):
    response = post(client, photo, format="glb", texture=texture, texture_size=64)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "model/gltf-binary"
    scene = trimesh.load(io.BytesIO(response.content), file_type="glb", process=False)
    # ICT's topology: the face region's own vertices and triangles, and the eyeballs as a second mesh.
    assert set(scene.geometry) == {"face_0", "face_0_eyes"}
    mesh, eyes = scene.geometry["face_0"], scene.geometry["face_0_eyes"]
    head = HeadModel.load()
    assert len(mesh.vertices) == len(head.face.ids) and len(mesh.faces) == len(head.face.triangles)
    assert len(eyes.faces) == len(head.eyes.triangles) and eyes.visual.material.roughnessFactor < 1.0
    material = mesh.visual.material
    assert material.baseColorTexture is not None and material.baseColorTexture.size == (64, 64)
    assert material.metallicFactor == 0.0
    extent = mesh.vertices.max(0) - mesh.vertices.min(0)
    assert extent.max() < 1.0  # metres: a face, not centimetres
    # The figures travel in the glTF JSON chunk's asset extras.
    length = struct.unpack_from("<I", response.content, 12)[0]
    gltf = json.loads(response.content[20:20 + length])
    assert gltf["asset"]["extras"]["faces"][0]["landmarks68"]
    assert [image["mimeType"] for image in gltf["images"]] == ["image/jpeg"] * 2  # the fast default, face and eyes


def test_obj_zip_loads_back_with_its_texture(client, photo, topology, tmp_path):
    response = post(client, photo, format="obj", texture_size=32)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert {"face_0.obj", "face_0.mtl", "face_0_eyes.obj", "result.json"} <= set(archive.namelist())
        archive.extractall(tmp_path)
    head = HeadModel.load()
    obj_lines = (tmp_path / "face_0.obj").read_text().splitlines()
    # ICT's own vertices (split where ICT splits them along UV seams) and triangles.
    assert sum(line.startswith("v ") for line in obj_lines) == len(head.face.ids)
    mesh = trimesh.load(tmp_path / "face_0.obj", process=False)
    assert len(mesh.vertices) == len(head.face.ids) and len(mesh.faces) == len(head.face.triangles)
    assert mesh.visual.material.image is not None and mesh.visual.material.image.size == (32, 32)


def test_region_head_in_glb_and_obj(client, photo, tmp_path):
    """region=head: ICT's head (its ears, neck, back of the head, sockets, teeth, gums and tongue around
    the face region) in both mesh formats, the eyeballs beside it; an unknown region is a 422 naming
    the option."""
    head = HeadModel.load()
    glb = post(client, photo, format="glb", region="head", texture_size=32)
    assert glb.status_code == 200, glb.text
    scene = trimesh.load(io.BytesIO(glb.content), file_type="glb", process=False)
    mesh = scene.geometry["face_0"]
    assert len(mesh.vertices) == len(head.head.ids) and len(mesh.faces) == len(head.head.triangles)
    assert "face_0_eyes" in scene.geometry
    assert np.isfinite(mesh.vertices).all()  # every vertex has bases, the teeth's and gums' included
    assert len(mesh.vertices) > len(np.unique(head.head.ids)) > 21_000  # ICT's 24,591 less the eyeballs
    obj = post(client, photo, format="obj", region="head", texture_size=32)
    assert obj.status_code == 200, obj.text
    with zipfile.ZipFile(io.BytesIO(obj.content)) as archive:
        archive.extractall(tmp_path)
    loaded = trimesh.load(tmp_path / "face_0.obj", process=False)
    assert len(loaded.faces) == len(head.head.triangles)
    body = assert_problem(post(client, photo, format="glb", region="shoulders"), 422)
    assert "region" in json.dumps(body)


@pytest.mark.parametrize("mesh_kind", ["identity", "expression"])
def test_mesh_kinds(client, photo, topology, mesh_kind):
    response = post(client, photo, format="glb", mesh=mesh_kind, texture_size=16)
    assert response.status_code == 200, response.text
    mesh = trimesh.load(io.BytesIO(response.content), file_type="glb", process=False).geometry["face_0"]
    assert len(mesh.vertices) == len(HeadModel.load().face.ids)


# --- bad input -------------------------------------------------------------------------------------

def test_413_upload_too_large(client):
    body = assert_problem(post(client, b"\0" * (20 * 1024 * 1024 + 1)), 413, "too-large")
    assert body["max_upload_bytes"] == 20 * 1024 * 1024


def test_413_decompression_bomb_refused_from_the_header():
    png = bytearray(encode(Image.new("L", (8, 8)), "PNG"))
    # Claim 50000 x 50000 pixels in IHDR (and fix its CRC); the guard must refuse before decoding.
    png[16:24] = struct.pack(">II", 50_000, 50_000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    with pytest.raises(Exception) as raised:
        decode_image(bytes(png), max_pixels=40_000_000, formats=["PNG"])
    assert getattr(raised.value, "status", None) == 413


def test_413_bomb_over_http(client):
    png = bytearray(encode(Image.new("L", (8, 8)), "PNG"))
    png[16:24] = struct.pack(">II", 50_000, 50_000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    assert_problem(post(client, bytes(png)), 413, "too-large")


def test_415_not_an_image(client):
    assert_problem(post(client, b"%PDF-1.4 this is not a photo", filename="x.pdf"), 415, "unsupported-media-type")


def test_400_truncated_jpeg(client, photo):
    assert_problem(post(client, photo[: len(photo) // 2]), 400, "undecodable-image")


def test_422_blank_image_has_no_face(client):
    blank = encode(Image.new("RGB", (320, 240), (128, 128, 128)), "PNG")
    assert_problem(post(client, blank, format="json"), 422, "no-face")


def test_422_face_too_small_reports_the_minimum(client):
    body = assert_problem(post(client, encode(noise_image(), "PNG"), box="10,10,20,20"), 422, "face-too-small")
    assert body["min_face_px"] == 40


def test_422_invalid_option(client, photo):
    assert_problem(post(client, photo, format="stl"), 422, "invalid-request")
    assert_problem(post(client, photo, box="1,2,3"), 422, "invalid-request")


# --- options: query or form, one rule -----------------------------------------------------------------

NOISE_BOX = "40,30,160,150"


def post_noise(client, query: str = "", **form):
    return client.post(f"/v1/reconstruct{query}", files={"image": ("n.png", encode(noise_image(), "PNG"))},
                       data={k: str(v) for k, v in form.items()})


def test_options_as_query_parameters(client):
    response = post_noise(client, f"?format=json&box={NOISE_BOX}&texture_size=16")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json", response.text
    assert response.json()["faces"][0]["box"] == [40, 30, 160, 150]
    assert post_noise(client, "?format=obj", box=NOISE_BOX).headers["content-type"] == "application/zip"


def test_an_option_in_both_places_must_agree(client):
    same = post_noise(client, f"?format=json&box={NOISE_BOX}", format="json", box="160,150,40,30")
    assert same.status_code == 200, same.text  # the same box, corners the other way round
    body = assert_problem(post_noise(client, "?format=json&texture=shaded", format="glb", texture="shaded",
                                     box=NOISE_BOX), 422, "conflicting-option")
    assert body["options"] == ["format"] and "format" in body["detail"]


@pytest.mark.parametrize("query,form,named", [("?colour=red", {}, "query.colour"), ("", {"colour": "red"}, "body.colour"),
                                              ("?format=json&format=glb", {}, "query.format"),
                                              ("?formats=json", {}, "query.formats")])
def test_unknown_or_repeated_options_are_named(client, query, form, named):
    body = assert_problem(post_noise(client, query, box=NOISE_BOX, **form), 422, "invalid-request")
    assert named in body["detail"] and [named.split(".")[0], named.split(".")[1]] in [e["loc"] for e in body["errors"]]


def test_box_corners_in_either_order_and_only_non_negative_numbers(client):
    swapped = post_noise(client, format="json", box="160,150,40,30")
    assert swapped.json()["faces"][0]["box"] == [40, 30, 160, 150]
    for bad in ("-1,30,160,150", "40,30,160", "1e3,30,160,150", "nan,30,160,150"):
        assert_problem(post_noise(client, box=bad), 422, "invalid-request")
    assert_problem(post_noise(client, box="5000,5000,6000,6000"), 400, "box-outside-image")


def test_batch_limits_are_validation_errors(client, photo):
    files = [("images", (f"{i}.jpg", photo, "image/jpeg")) for i in range(9)]
    body = assert_problem(client.post("/v1/reconstruct/batch", files=files), 422, "invalid-request")
    assert "images" in body["detail"] and "at most 8" in body["detail"]
    empty = [("images", ("a.jpg", photo, "image/jpeg")), ("images", ("b.jpg", b"", "image/jpeg"))]
    assert_problem(client.post("/v1/reconstruct/batch", files=empty), 422, "invalid-request")
    assert_problem(client.post("/v1/reconstruct/batch?format=glb", files=files[:1]), 422, "invalid-request")
    assert_problem(client.post("/v1/reconstruct/batch?texture_size=4096", files=files[:1]), 400, "bad-request")


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("I;16", "PNG"),
                                      ("P", "PNG"), ("RGB", "WEBP"), ("RGB", "BMP"), ("RGB", "TIFF")])
def test_image_modes_accepted_with_a_box(client, mode, fmt):
    image = noise_image(mode) if mode != "I;16" else Image.fromarray(
        (np.random.default_rng(1).integers(0, 65535, (160, 200))).astype(np.uint16))
    response = post(client, encode(image, fmt), format="json", box="40,30,160,150")
    assert response.status_code == 200, response.text
    assert response.json()["faces"][0]["detector"] == "caller"


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    image = Image.fromarray(np.full((8, 8), 32896, np.uint16))  # mid-grey in 16 bits
    rgb = decode_image(encode(image, "PNG"), max_pixels=100, formats=["PNG"])
    assert rgb.shape == (8, 8, 3) and abs(int(rgb[0, 0, 0]) - 128) <= 1


def test_exif_orientation_is_applied():
    image = noise_image(size=(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rgb = decode_image(encode(image, "JPEG", exif=exif), max_pixels=10_000, formats=["JPEG"])
    assert rgb.shape == (40, 20, 3)


def test_503_with_retry_after_when_the_queue_is_full(client, photo):
    engine = client.app.state.engine
    with contextlib.ExitStack() as stack:
        for _ in range(engine.settings.queue_size):
            stack.enter_context(engine.admit())
        response = post(client, photo, format="json")
    assert_problem(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1"
    assert post(client, photo, format="json").status_code == 200  # admitted again once drained


def test_a_request_that_cannot_be_queued_is_refused_before_its_upload_is_read(client, photo):
    """With queue_size requests already in flight, the next is a 503 at once: its body is never parsed
    (a malformed multipart body would otherwise be a 4xx)."""
    gate = client.app.state.gate
    gate.in_flight += gate.capacity
    try:
        response = client.post("/v1/reconstruct", content=b"--not a multipart body",
                               headers={"Content-Type": "multipart/form-data; boundary=x"})
        batch = client.post("/v1/reconstruct/batch", content=b"--x", headers={"Content-Type": "multipart/form-data; boundary=x"})
        job = client.post("/v1/jobs", content=b"--x", headers={"Content-Type": "multipart/form-data; boundary=x"})
    finally:
        gate.in_flight -= gate.capacity
    assert_problem(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1"
    assert_problem(batch, 503, "overloaded")
    assert job.status_code == 422  # jobs queue in the job store, not in the engine: not gated
    assert gate.in_flight == 0
    assert post(client, photo, format="json").status_code == 200 and gate.in_flight == 0


# --- batch, batching, metrics ----------------------------------------------------------------------

def test_batch_endpoint_reports_each_image(client, photo):
    files = [("images", ("a.jpg", photo, "image/jpeg")), ("images", ("b.txt", b"not an image", "text/plain"))]
    response = client.post("/v1/reconstruct/batch", files=files, data={"format": "json"})
    assert response.status_code == 200, response.text
    first, second = response.json()["items"]
    assert first["filename"] == "a.jpg" and len(first["result"]["faces"]) == 1
    assert second["problem"]["status"] == 415


def test_micro_batcher_joins_concurrent_calls():
    calls = []

    def runner(feeds):
        calls.append(len(feeds["x"]))
        return [feeds["x"] * 2]

    batcher = MicroBatcher("test", runner, max_batch=8, max_delay_s=0.2)
    results = {}

    def call(i):
        results[i] = batcher({"x": np.full((i, 1), i)})[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert calls == [6]
    for i in (1, 2, 3):
        np.testing.assert_array_equal(results[i], np.full((i, 1), 2 * i))


def test_micro_batcher_splits_more_rows_than_its_limit():
    """Many faces (doubled by mirror averaging) must not reach a graph as one batch beyond max_batch,
    where a TensorRT engine's profile ends."""
    calls = []

    def runner(feeds):
        calls.append(len(feeds["x"]))
        return [feeds["x"] + 1]

    batcher = MicroBatcher("test", runner, max_batch=4, max_delay_s=0.0)
    out = batcher({"x": np.arange(10)[:, None]})[0]
    with pytest.raises(ValueError, match="batch limit"):
        batcher.submit({"x": np.zeros((5, 1))})
    batcher.close()
    assert max(calls) <= 4 and sum(calls) == 10
    np.testing.assert_array_equal(out[:, 0], np.arange(1, 11))


def test_micro_batcher_waits_only_for_requests_that_can_join():
    """With ``company`` (requests in the engine), a batch runs as soon as each of them has an item in it:
    a lone request does not wait out max_delay, and three requests still go as one batch."""
    calls = []

    def runner(feeds):
        calls.append(len(feeds["x"]))
        return [feeds["x"] * 2]

    lone = MicroBatcher("lone", runner, max_batch=8, max_delay_s=5.0, company=lambda: 1)
    began = time.perf_counter()
    np.testing.assert_array_equal(lone({"x": np.ones((1, 1))})[0], [[2.0]])
    assert time.perf_counter() - began < 2.5
    lone.close()

    calls.clear()
    gate = threading.Barrier(3)
    trio = MicroBatcher("trio", runner, max_batch=8, max_delay_s=5.0, company=lambda: 3)
    threads = [threading.Thread(target=lambda i=i: (gate.wait(), trio({"x": np.full((i, 1), i)}))) for i in (1, 2, 3)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trio.close()
    assert calls == [6] and time.perf_counter() - began < 2.5


def test_a_lone_request_runs_its_graph_in_its_own_thread():
    """Alone in the engine, a request hands nothing to the worker thread: the graph runs in the caller's
    thread, and the metrics still see a batch of its rows with no queue wait. With company, the calls
    are batched by the worker thread as before."""
    ran_in, batches = [], []

    def runner(feeds):
        ran_in.append(threading.get_ident())
        return [feeds["x"] * 2]

    company = {"requests": 1}
    batcher = MicroBatcher("test", runner, max_batch=8, max_delay_s=5.0, on_batch=lambda rows, waits: batches.append((rows, waits)),
                           company=lambda: company["requests"])
    np.testing.assert_array_equal(batcher({"x": np.ones((2, 1))})[0], [[2.0], [2.0]])
    assert ran_in == [threading.get_ident()] and batches == [(2, [0.0])]
    company["requests"] = 2
    gate = threading.Barrier(2)
    callers = []

    def call(i):
        callers.append(threading.get_ident())
        gate.wait()
        batcher({"x": np.full((1, 1), i)})

    threads = [threading.Thread(target=call, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert len(ran_in) == 2 and ran_in[1] not in callers and batches[1][0] == 2


def test_lone_calls_and_batches_never_run_the_graph_at_once():
    """Requests that find themselves alone run inline while others go through the worker thread: one
    runner call at a time all the same, and every caller gets its own rows back."""
    import random

    active, most = [0], [0]
    lock = threading.Lock()

    def runner(feeds):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.002)
        with lock:
            active[0] -= 1
        return [feeds["x"] + 1]

    rng = random.Random(0)
    batcher = MicroBatcher("test", runner, max_batch=4, max_delay_s=0.01, company=lambda: rng.choice([1, 1, 2, 4]))
    wrong = []

    def call(i):
        for j in range(15):
            x = np.full((1, 1), 100 * i + j)
            if batcher({"x": x})[0][0, 0] != x[0, 0] + 1:
                wrong.append((i, j))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert not wrong and most[0] == 1


def test_heatmaps_hold_no_denormal_floats():
    """Gaussian tails under float32's smallest normal number are zeroed: denormals slow texture.onnx ~2x."""
    from service.engine.unwrap import heatmaps

    maps = heatmaps(np.array([[0.5, 0.5], [127.5, 64.5], [64.5, 127.5]]), 128)
    tiny = np.finfo(np.float32).tiny
    assert maps.dtype == np.float32 and not np.any((maps > 0) & (maps < tiny))
    assert maps.max() == 1.0 and np.count_nonzero(maps == 0) > 0


def test_heatmaps_equal_the_gaussians_computed_in_double_precision():
    """The separable float32 maps against each map's 2D Gaussian evaluated directly in float64."""
    from service.engine.unwrap import heatmaps

    marks = np.random.default_rng(0).uniform(-4, 68, (68, 2))
    maps = heatmaps(marks, 64)
    sigma = 1.5 * 64 / 128
    y, x = np.mgrid[0:64, 0:64] + 0.5
    reference = np.exp(-((x - marks[:, 0, None, None]) ** 2 + (y - marks[:, 1, None, None]) ** 2) / (2 * sigma**2))
    assert maps.shape == (68, 64, 64)
    np.testing.assert_allclose(maps, reference, rtol=1e-6, atol=1.1e-19)  # tails dropped below sqrt(tiny) x 1


def test_metrics_exposed(client, photo):
    post(client, photo, format="json")
    text = client.get("/metrics").text
    for name in ('facerecon_request_duration_seconds_bucket{format="json",le="0.005"}',
                 'facerecon_stage_duration_seconds_bucket{le="0.001",stage="detect"}',
                 "facerecon_queue_duration_seconds", "facerecon_batch_size", "facerecon_queue_depth",
                 "facerecon_queue_capacity 4.0", "facerecon_model_ready 1.0", "facerecon_jobs_queued 0.0",
                 "facerecon_jobs_queue_capacity 64.0",
                 'facerecon_inference_requests_total{format="json",outcome="success"}', "facerecon_faces_per_image",
                 'facerecon_model_info{name="tiny",providers="CPUExecutionProvider",version="0.0.1"} 1.0',
                 'http_requests_total{handler="/v1/reconstruct",method="POST",status="2xx"}'):
        assert name in text, name


def test_openapi_documents_the_routes(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/v1/reconstruct", "/v1/reconstruct/batch", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result",
            "/v2/health/live", "/v2/health/ready", "/v2/models/{name}"} <= set(paths)
    # Every error answer is problem+json, and only that.
    for operation in (op for path in paths.values() for op in path.values()):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert list(response["content"]) == [PROBLEM], (operation["operationId"], status)
    # What the server enforces, stated: settings' limits too.
    reconstruct = paths["/v1/reconstruct"]["post"]
    query = {p["name"]: p["schema"] for p in reconstruct["parameters"]}
    assert set(query) == {"format", "texture", "faces", "box", "texture_size", "mesh", "morph_targets", "region"}
    assert query["texture_size"]["minimum"] == 16 and query["texture_size"]["maximum"] == 2048
    assert "pattern" in query["box"]
    form = schema["components"]["schemas"]["ReconstructForm"]
    assert form["additionalProperties"] is False and form["properties"]["image"]["minLength"] == 1
    assert "image/jpeg" in reconstruct["requestBody"]["content"]["multipart/form-data"]["encoding"]["image"]["contentType"]
    images = schema["components"]["schemas"]["BatchForm"]["properties"]["images"]
    assert (images["minItems"], images["maxItems"]) == (1, 8)
    # The stateful fuzzer and client generators get from a new job to its status and result.
    links = paths["/v1/jobs"]["post"]["responses"]["202"]["links"]
    assert {link["operationId"] for link in links.values()} == {"job_status", "job_result"}
    assert {paths["/v1/jobs/{job_id}"]["get"]["operationId"], paths["/v1/jobs/{job_id}/result"]["get"]["operationId"]} \
        == {"job_status", "job_result"}


@pytest.mark.parametrize("operator, expected", [(None, "1"), ("3", "3")])
def test_the_service_asks_openblas_for_one_thread_unless_the_operator_chose(operator, expected):
    """OpenBLAS reads OPENBLAS_NUM_THREADS once, when numpy loads it: the service package sets it first
    (its pool of spinning threads fought onnxruntime's for the cores); an operator's value stands."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if operator is not None:
        env["OPENBLAS_NUM_THREADS"] = operator
    out = subprocess.run([sys.executable, "-c", "import os, service, numpy; print(os.environ['OPENBLAS_NUM_THREADS'])"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected
