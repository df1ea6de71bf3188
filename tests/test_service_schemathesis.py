"""schemathesis against the real app under uvicorn on 127.0.0.1, from the app's own OpenAPI schema: every
check, every phase, a few hundred cases (benchmarks/fuzz.py, which runs the same thing large)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from service.app import create_app
from service.settings import Settings
from service_fixtures import http_server, photo_path, tiny_store

pytest.importorskip("schemathesis", reason="schemathesis (dev extra) is not installed")

ROOT = Path(__file__).resolve().parents[1]
MAX_EXAMPLES = 12  # per operation and phase: ~400 cases, ~40 s here
MIN_CASES = 300


def load_fuzz():
    spec = importlib.util.spec_from_file_location("fuzz", ROOT / "benchmarks" / "fuzz.py")
    fuzz = importlib.util.module_from_spec(spec)
    sys.modules["fuzz"] = fuzz  # its dataclasses look their module up while it loads
    spec.loader.exec_module(fuzz)
    return fuzz


def test_every_check_and_phase_pass_and_the_stateful_phase_reaches_the_job_routes(tmp_path, tmp_path_factory, kit):
    photo = photo_path()
    if not photo.is_file():
        pytest.skip(f"real photo {photo} absent (schema-valid uploads carry it; the shared eval photos are not here)")
    fuzz = load_fuzz()
    # The settings benchmarks/fuzz.py serves with: small textures, a job queue that does not fill up.
    app = create_app(Settings(model_store=tiny_store(tmp_path_factory, kit), job_store=str(tmp_path / "jobs.db"),
                              default_texture_size=64, max_texture_size=256, max_queued_jobs=100_000, queue_size=64))
    with http_server(app) as url:
        figures = fuzz.run_schemathesis(url, MAX_EXAMPLES, seed=26, workdir=tmp_path, photo=photo, timeout_s=600)
    output = (tmp_path / "output.txt").read_text()
    assert figures.exit_code == 0 and not figures.failures, f"{figures.failures[:10]}\n{output[-6000:]}"
    assert figures.server_errors == 0, figures.statuses
    assert figures.cases >= MIN_CASES, figures.by_phase
    assert {"examples", "coverage", "fuzzing", "stateful"} <= set(figures.by_phase), figures.by_phase
    for operation in fuzz.JOB_ROUTES:
        assert figures.reached(operation), (operation, dict(figures.stateful))
    # Schema-valid uploads carried the photo and reached the engine.
    assert figures.statuses[200] and figures.statuses[202], figures.statuses


def test_a_failing_contract_is_reported(tmp_path):
    """The report reader counts a failed check and a 5xx (so that the test above can fail)."""
    fuzz = load_fuzz()
    report = tmp_path / "report.ndjson"
    case = {"method": "POST", "path": "/v1/jobs", "meta": {"generation": {"mode": "positive"}}}
    response = {"status_code": 500, "content": {"$base64": ""}}
    report.write_text('{"ScenarioFinished": ' + json.dumps({
        "phase": "fuzzing", "recorder": {"cases": {"a": {"value": case}},
                                         "interactions": {"a": {"response": response}},
                                         "checks": {"a": [{"name": "not_a_server_error", "status": "failure"}]}}}) + "}\n")
    figures = fuzz.read_report(report, fuzz.Figures(1, 0.0, "test"))
    assert figures.cases == 1 and figures.server_errors == 1
    assert figures.failures == ["not_a_server_error on POST /v1/jobs (500)"]
    assert not figures.reached(fuzz.JOB_ROUTES[0])
