"""The async job API over HTTP: submit, poll, fetch; failures; work that survives a restart."""

from __future__ import annotations

import io
import time
from datetime import datetime

import pytest
import trimesh
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings
from service_fixtures import encode, noise_image, photo_bytes, ready_client, tiny_store

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, kit):
    return tiny_store(tmp_path_factory, kit)


def make_app(store_root, job_db, **overrides):
    return create_app(Settings(model_store=store_root, default_texture_size=32, job_store=str(job_db),
                               job_poll_s=0.05, **overrides))


@pytest.fixture(scope="module")
def client(store_root, tmp_path_factory):
    with ready_client(make_app(store_root, tmp_path_factory.mktemp("jobs") / "jobs.db")) as test_client:
        yield test_client


def submit(client, data: bytes, **options):
    return client.post("/v1/jobs", files={"image": ("photo.jpg", data, "application/octet-stream")},
                       data={k: str(v) for k, v in options.items()})


def wait_finished(client, job_id: str, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout_s} s"
        time.sleep(0.05)


def assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["type"].endswith("/" + slug), body
    return body


def boxed_noise() -> tuple[bytes, dict]:
    """An image the engine reconstructs without a real photo: the caller's box skips detection."""
    return encode(noise_image(), "PNG"), {"box": "40,30,160,150"}


def test_submit_poll_fetch_a_glb(client):
    accepted = submit(client, photo_bytes(), format="glb", texture_size=32)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert accepted.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["options"]["format"] == "glb" and job["result_url"] is None

    done = wait_finished(client, job["id"])
    assert done["status"] == "succeeded", done
    created, started, finished = (datetime.fromisoformat(done[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished
    assert done["media_type"] == "model/gltf-binary" and done["problem"] is None

    result = client.get(done["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "model/gltf-binary"
    mesh = trimesh.load(io.BytesIO(result.content), file_type="glb", process=False).geometry["face_0"]
    assert len(mesh.faces) > 0
    assert mesh.visual.material.baseColorTexture.size == (32, 32)


def test_json_result_keeps_its_media_type(client):
    image, options = boxed_noise()
    done = wait_finished(client, submit(client, image, format="json", **options).json()["id"])
    result = client.get(f"/v1/jobs/{done['id']}/result")
    assert result.headers["content-type"] == "application/json"
    assert result.json()["faces"][0]["detector"] == "caller"


def test_no_face_fails_with_the_422_problem_inside(client):
    blank = encode(Image.new("RGB", (320, 240), (128, 128, 128)), "PNG")
    job_id = submit(client, blank).json()["id"]
    done = wait_finished(client, job_id)
    assert done["status"] == "failed" and done["finished_at"]
    problem = done["problem"]
    assert problem["status"] == 422 and problem["type"].endswith("/no-face")
    assert problem["instance"] == f"/v1/jobs/{job_id}"
    refused = assert_problem(client.get(f"/v1/jobs/{job_id}/result"), 409, "job-failed")
    assert refused["problem"]["status"] == 422


def test_what_needs_no_model_is_refused_at_acceptance(client):
    assert_problem(submit(client, b"%PDF-1.4 not a photo"), 415, "unsupported-media-type")
    assert_problem(submit(client, encode(noise_image(), "PNG"), texture_size=4096), 400, "bad-request")
    assert_problem(submit(client, encode(noise_image(), "PNG"), format="stl"), 422, "invalid-request")


def test_unknown_job_is_404(client):
    assert_problem(client.get("/v1/jobs/nope"), 404, "not-found")
    assert_problem(client.get("/v1/jobs/nope/result"), 404, "not-found")


def test_accepted_jobs_survive_a_restart(store_root, tmp_path):
    db = tmp_path / "jobs.db"
    image, options = boxed_noise()
    # job_workers=0: this process accepts jobs and runs none, as if it died before getting to them.
    first = make_app(store_root, db, job_workers=0, max_queued_jobs=2)
    with TestClient(first, raise_server_exceptions=False) as client:
        queued = submit(client, image, format="json", **options).json()["id"]
        interrupted = submit(client, image, format="glb", texture_size=16, **options).json()["id"]
        full = submit(client, image, **options)
        assert_problem(full, 503, "overloaded")
        assert full.headers["Retry-After"] == "1"
        assert "\nfacerecon_jobs_queued 2.0\n" in client.get("/metrics").text  # what FacereconJobBacklog reads
        # A worker took this one and the process stopped mid-run.
        job, _ = first.state.jobs.claim()
        assert job.id == queued
        assert "\nfacerecon_jobs_queued 1.0\n" in client.get("/metrics").text
        assert client.get(f"/v1/jobs/{queued}").json()["status"] == "running"
        waiting = assert_problem(client.get(f"/v1/jobs/{interrupted}/result"), 409, "job-not-finished")
        assert waiting["detail"] == "the job is queued"

    second = make_app(store_root, db, job_workers=1)
    with TestClient(second, raise_server_exceptions=False) as client:
        for job_id in (queued, interrupted):
            assert wait_finished(client, job_id)["status"] == "succeeded"
        assert client.get(f"/v1/jobs/{queued}/result").json()["faces"]
        glb = client.get(f"/v1/jobs/{interrupted}/result")
        assert glb.headers["content-type"] == "model/gltf-binary"
        trimesh.load(io.BytesIO(glb.content), file_type="glb", process=False)


def test_an_unusable_job_store_leaves_the_rest_of_the_service_up(store_root, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    app = make_app(store_root, blocker / "jobs.db")
    with ready_client(app) as client:
        image, options = boxed_noise()
        refused = assert_problem(submit(client, image, **options), 503, "not-ready")
        assert "cannot be opened" in refused["detail"]
        assert "\nfacerecon_jobs_queued NaN\n" in client.get("/metrics").text  # unknown, not 0
        assert client.post("/v1/reconstruct", files={"image": ("x.png", image)},
                           data={"format": "json", **options}).status_code == 200
