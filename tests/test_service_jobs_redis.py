"""The async job API on the Redis store (FACERECON_JOB_STORE=redis://...), against a real redis-server.

Each test module run starts a throwaway redis-server (append-only file in a temporary folder, so that
it can be restarted with its data) on a free port; Debian's redis-server is installed with apt-get
when missing and possible, and the tests skip only when it cannot be.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.jobs import JobStoreError, SQLiteJobStore, open_job_store
from service.schemas import Options
from test_service_jobs import assert_problem, boxed_noise, make_app, submit, wait_finished
from service_fixtures import apt_install, free_port, tiny_store

redis = pytest.importorskip("redis", reason="redis-py (serve extra) is not installed")

ROOT = Path(__file__).resolve().parents[1]


class RedisServer:
    """A redis-server subprocess on a free port, persisting to an append-only file in ``folder``."""

    def __init__(self, binary: str, folder: Path):
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        # appendfsync always: every write is on disk before Redis answers, as SQLite does before the 202.
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client, deadline = redis.Redis(port=self.port), time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert self.process.poll() is None, "redis-server exited at start"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        apt_install("redis-server")
        binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH, and apt-get could not install it")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """The server's URL, its database emptied of other tests' jobs."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    return redis_server.url


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, kit):
    return tiny_store(tmp_path_factory, kit)


def test_the_url_picks_the_store(tmp_path):
    assert isinstance(open_job_store(str(tmp_path / "a.db"), 1, 1.0), SQLiteJobStore)
    assert isinstance(open_job_store(f"sqlite:///{tmp_path}/b.db", 1, 1.0), SQLiteJobStore)
    for url in (f"redis://127.0.0.1:{free_port()}/0", f"rediss://127.0.0.1:{free_port()}/0"):
        with pytest.raises(JobStoreError, match="onnect"):  # tried to reach a Redis there
            open_job_store(url, 1, 1.0)
    with pytest.raises(JobStoreError, match="not a SQLite path"):
        open_job_store("postgres://db/jobs", 1, 1.0)


def test_submit_poll_fetch(store_root, redis_url):
    image, options = boxed_noise()
    with TestClient(make_app(store_root, redis_url), raise_server_exceptions=False) as client:
        accepted = submit(client, image, format="glb", texture_size=16, **options)
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert accepted.headers["Location"] == f"/v1/jobs/{job['id']}" and job["status"] == "queued"

        done = wait_finished(client, job["id"])
        assert done["status"] == "succeeded" and done["media_type"] == "model/gltf-binary", done
        assert done["created_at"] <= done["started_at"] <= done["finished_at"]
        result = client.get(done["result_url"])
        assert result.status_code == 200 and result.headers["content-type"] == "model/gltf-binary"
        assert result.content[:4] == b"glTF"

        failed = wait_finished(client, submit(client, image, box="0,0,1,1").json()["id"])
        assert failed["status"] == "failed" and failed["problem"]["status"] == 422, failed
        assert_problem(client.get(f"/v1/jobs/{failed['id']}/result"), 409, "job-failed")
        assert_problem(client.get("/v1/jobs/nope"), 404, "not-found")


def test_accepted_jobs_survive_a_restart_of_the_service_and_of_redis(store_root, redis_server, redis_url):
    image, options = boxed_noise()
    # job_workers=0: this instance accepts jobs and runs none.
    first = make_app(store_root, redis_url, job_workers=0, max_queued_jobs=2)
    with TestClient(first, raise_server_exceptions=False) as client:
        interrupted = submit(client, image, format="json", **options).json()["id"]
        queued = submit(client, image, format="glb", texture_size=16, **options).json()["id"]
        full = submit(client, image, **options)
        assert_problem(full, 503, "overloaded")
        assert full.headers["Retry-After"] == "1"
        assert "\nfacerecon_jobs_queued 2.0\n" in client.get("/metrics").text  # LLEN of the shared queue
        # A worker of this instance took the oldest job, and the instance shuts down mid-run.
        job, _ = first.state.jobs.claim()
        assert job.id == interrupted
        assert client.get(f"/v1/jobs/{interrupted}").json()["status"] == "running"
        assert client.get(f"/v1/jobs/{queued}").json()["status"] == "queued"

    redis_server.restart()  # the jobs come back from the append-only file

    with TestClient(make_app(store_root, redis_url), raise_server_exceptions=False) as client:
        for job_id in (interrupted, queued):
            assert wait_finished(client, job_id)["status"] == "succeeded"
        assert client.get(f"/v1/jobs/{interrupted}/result").json()["faces"]
        assert client.get(f"/v1/jobs/{queued}/result").content[:4] == b"glTF"


def test_a_job_whose_worker_died_runs_again_once_its_lease_ends(store_root, redis_url):
    submitted = open_job_store(redis_url, 10, 30.0)
    image, options = boxed_noise()
    job = submitted.submit(image, Options(format="json", box=options["box"]), "noise.png")
    submitted.close()
    # Another process claims the job with a 1 s lease and is killed mid-run: no close, no heartbeat.
    claim_and_die = (
        "import os, signal; from service.jobs import open_job_store\n"
        f"job, _ = open_job_store({redis_url!r}, 10, 1.0).claim(); print(job.id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)")
    died = subprocess.run([sys.executable, "-c", claim_and_die], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert died.returncode == -9 and died.stdout.strip() == job.id, died.stderr

    other = open_job_store(redis_url, 10, 30.0)
    try:
        assert other.get(job.id).status.value == "running"
        assert other.claim() is None  # its lease still runs
    finally:
        other.close()
    with TestClient(make_app(store_root, redis_url), raise_server_exceptions=False) as client:
        done = wait_finished(client, job.id)
        assert done["status"] == "succeeded", done
        assert client.get(f"/v1/jobs/{job.id}/result").json()["faces"]


def test_a_live_worker_keeps_its_job_and_hands_it_back_on_close(redis_url):
    holder, other = open_job_store(redis_url, 10, 0.3), open_job_store(redis_url, 10, 0.3)
    try:
        job = holder.submit(b"image", Options(), None)
        assert holder.claim()[0].id == job.id
        time.sleep(1.0)  # three leases long: only the heartbeat keeps it
        assert other.claim() is None
        holder.close()  # shutting down mid-run: the job goes back to the queue at once
        claimed, image = other.claim()
        assert claimed.id == job.id and claimed.status.value == "running" and image == b"image"
        # The first holder's late result is not recorded over the new holder's run.
        holder.succeed(job.id, b"late", "model/gltf-binary")
        assert other.get(job.id).status.value == "running"
        other.succeed(job.id, b"mesh", "model/gltf-binary")
        assert other.get(job.id).status.value == "succeeded" and other.result(job.id) == b"mesh"
    finally:
        other.close()


def test_two_stores_never_claim_the_same_job(redis_url):
    stores = [open_job_store(redis_url, 100, 30.0) for _ in range(2)]
    submitted = {stores[0].submit(b"image", Options(), None).id for _ in range(40)}
    claims: list[str] = []
    lock = threading.Lock()

    def worker(store):
        while (claimed := store.claim()) is not None:
            with lock:
                claims.append(claimed[0].id)

    threads = [threading.Thread(target=worker, args=(store,)) for store in stores for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert len(claims) == len(submitted) and set(claims) == submitted
    finally:
        for store in stores:
            store.close()


def test_redis_down_gives_503_and_the_service_recovers(store_root, redis_server, redis_url):
    """While Redis is unreachable the job routes answer 503 problem+json with Retry-After, never 500;
    once it is back the same service accepts jobs again."""
    image, options = boxed_noise()
    with TestClient(make_app(store_root, redis_url, job_workers=0), raise_server_exceptions=False) as client:
        redis_server.stop()
        try:
            refused = submit(client, image, **options)
            assert_problem(refused, 503, "job-store-unavailable")
            assert refused.headers["Retry-After"]
            assert_problem(client.get("/v1/jobs/some-id"), 503, "job-store-unavailable")
        finally:
            redis_server.start()
        assert submit(client, image, **options).status_code == 202
