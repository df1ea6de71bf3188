"""A real Prometheus scrapes the real service: the rules compute a p95 from its histograms, and every
query of the Grafana dashboard returns series.

The app runs under uvicorn on 127.0.0.1 with the tiny seeded model; Prometheus (Debian's package,
installed with apt-get when missing and possible) runs on the compose file's own configuration with
the target moved to the app and the intervals cut to 1 s.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.settings import Settings
from service_fixtures import debian_tool, encode, free_port, http_server, noise_image, tiny_store

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to write Prometheus's configuration")

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "facerecon.json"
BOX = {"box": "40,30,160,150"}  # the caller's box: the tiny model reconstructs noise without detection


def wait_for(what: str, probe: Callable[[], object], timeout_s: float = 20.0):
    """``probe()``'s first truthy answer, polled until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (answer := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return answer


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict]:
        """The instant vector ``expr`` evaluates to now (raises on a bad query)."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def values(self, expr: str) -> list[float]:
        return [float(series["value"][1]) for series in self.query(expr)]


@contextlib.contextmanager
def running_prometheus(binary: str, target: str, folder: Path) -> Iterator[Prometheus]:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS / name) for name in config["rule_files"]]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (folder / "prometheus.log").read_text()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        return False

    try:
        wait_for("Prometheus to start", ready)
        yield Prometheus(url)
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over cumulative ``(upper bound, count)`` pairs, +Inf last."""
    buckets = sorted(buckets)
    rank = q * buckets[-1][1]
    b = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    start, below = (buckets[b - 1][0], buckets[b - 1][1]) if b else (0.0, 0.0)
    end, count = buckets[b]
    return start + (end - start) * (rank - below) / (count - below)


def scraped_buckets(metrics_text: str, fmt: str) -> list[tuple[float, float]]:
    (family,) = [f for f in text_string_to_metric_families(metrics_text) if f.name == "facerecon_request_duration_seconds"]
    return [(float(s.labels["le"]), s.value) for s in family.samples
            if s.name.endswith("_bucket") and s.labels["format"] == fmt]


def send_requests(url: str) -> int:
    """Requests that make every dashboard series exist: each format, the batch endpoint, a client error."""
    image = encode(noise_image(), "PNG")
    sent = 0

    def post(path: str, files, **form) -> httpx.Response:
        nonlocal sent
        sent += 1
        return httpx.post(url + path, files=files, data=form, timeout=60)

    for fmt, times in (("glb", 4), ("obj", 2), ("json", 3)):
        for _ in range(times):
            response = post("/v1/reconstruct", {"image": ("noise.png", image)}, format=fmt, texture_size="16", **BOX)
            assert response.status_code == 200, response.text
    two = [("images", ("a.png", image)), ("images", ("b.png", image))]
    assert post("/v1/reconstruct/batch", two, format="json", texture_size="16", **BOX).status_code == 200
    assert post("/v1/reconstruct", {"image": ("noise.png", image)}, format="glb", box="0,0,1,1").status_code == 422
    return sent


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    return debian_tool("prometheus", "prometheus")


def test_a_real_prometheus_scrapes_the_service_and_the_dashboard_has_data(prometheus_binary, tmp_path_factory, kit):
    folder = tmp_path_factory.mktemp("prometheus")
    app = create_app(Settings(model_store=tiny_store(tmp_path_factory, kit), job_store=str(folder / "jobs.db")))
    with http_server(app) as url, running_prometheus(prometheus_binary, url.removeprefix("http://"), folder) as prom:
        # Scraped once before any request, so that every request counter's first sample is 0.
        assert wait_for("the first scrape", lambda: prom.values("facerecon_model_ready")) == [1.0]
        sent = send_requests(url)
        wait_for("a scrape after the requests",
                 lambda: prom.values("sum(facerecon_request_duration_seconds_count)") == [float(sent)])

        # The recorded p95 of glb requests is histogram_quantile over the scraped buckets: every bucket's
        # rate() is its count scaled by one factor (same samples, all starting at 0), which cancels.
        expected = histogram_quantile(0.95, scraped_buckets(httpx.get(url + "/metrics").text, "glb"))
        p95 = 'job_format:facerecon_request_duration_seconds:p95_5m{format="glb"}'
        wait_for(f"{p95} to reach {expected}",
                 lambda: [v for v in prom.values(p95) if math.isclose(v, expected, rel_tol=1e-6)])
        assert 0 < expected < 10

        counts = {series["metric"]["format"]: float(series["value"][1])
                  for series in prom.query("sum by (format) (facerecon_inference_requests_total)")}
        assert counts == {"glb": 5, "obj": 2, "json": 3, "batch": 1, "unknown": 0}  # as send_requests sent them
        assert prom.values('sum(job_format_outcome:facerecon_inference_requests:rate5m{outcome="client_error"})')[0] > 0
        assert prom.query("ALERTS") == []  # nothing fires on a healthy service
        empty = []
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target in panel["targets"]:
                values = prom.values(target["expr"])
                if not any(math.isfinite(v) for v in values):
                    empty.append(f"{panel['title']}: {target['expr']} -> {values}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
