"""Property-based requests from the app's own OpenAPI schema against a real uvicorn on 127.0.0.1:
no 5xx, and every error is application/problem+json."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.settings import Settings
from service_fixtures import tiny_store, wait_ready

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (dev extra) is not installed")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402 - installed with schemathesis
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

PROBLEM = "application/problem+json"
EXAMPLES_PER_MODE = 50  # per operation and mode: ~450 requests in all
MIN_CASES = 300


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, kit):
    app = create_app(Settings(
        model_store=tiny_store(tmp_path_factory, kit), job_store=str(tmp_path_factory.mktemp("fuzz") / "jobs.db"),
        # Small textures keep the generated requests that do reach the engine quick; a roomy job queue
        # keeps 503s (which would be correct, but are 5xx) out of the picture.
        default_texture_size=16, max_texture_size=64, max_queued_jobs=10_000, queue_size=64))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    url = "http://127.0.0.1:{}".format(server.servers[0].sockets[0].getsockname()[1])
    wait_ready(lambda path: httpx.get(url + path, timeout=5), app)
    yield url
    server.should_exit = True
    thread.join(timeout=30)


def test_generated_requests_get_no_5xx_and_only_problem_documents(base_url):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    cases: Counter[str] = Counter()
    failures: list[str] = []
    unsatisfiable: list[str] = []

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            def call(case):
                response = case.call(base_url=base_url, timeout=30)
                cases[operation.label] += 1
                # schemathesis keeps each header as a list of values
                status, media_type = response.status_code, response.headers.get("content-type", [""])[0]
                if status >= 500 or (status >= 400 and not media_type.startswith(PROBLEM)):
                    failures.append(f"{status} {media_type} {response.text[:300]}\n  {case.as_curl_command()}")

            try:
                call()
            except Unsatisfiable:
                # A GET whose only parameter is a free string in the path, or that has none, has no
                # invalid request.
                assert mode is GenerationMode.NEGATIVE, operation.label
                unsatisfiable.append(operation.label)

    assert not failures, f"{len(failures)} bad responses:\n" + "\n".join(failures[:10])
    assert sum(cases.values()) >= MIN_CASES, cases
    assert all(label.startswith("GET ") for label in unsatisfiable), unsatisfiable
    assert {"POST /v1/reconstruct", "POST /v1/jobs", "GET /v1/jobs/{job_id}/result"} <= set(cases), cases
