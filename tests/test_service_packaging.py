"""What can be checked here without a Docker engine or a cluster: the files parse and agree."""

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the compose and k8s files")
ROOT = Path(__file__).resolve().parents[1]


def test_compose_has_the_service_and_prometheus():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"facerecon", "facerecon-gpu", "prometheus"} <= set(compose["services"])
    gpu = compose["services"]["facerecon-gpu"]
    assert gpu["build"]["args"]["VARIANT"] == "gpu"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_k8s_manifests():
    docs = {d["kind"]: d for f in sorted((ROOT / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= set(docs)
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"] == "facerecon_queue_depth"
    assert all(k.startswith("FACERECON_") for k in docs["ConfigMap"]["data"])


def test_k8s_manifests_match_the_kubernetes_schemas():
    """Every manifest of a built-in kind against the Kubernetes 1.30 schemas (bundled by kubernetes-validate,
    no network), strict: an unknown or misspelt field fails; so does a wrong type, checked on a broken copy.
    The operator's PrometheusRule is checked against its own schema in test_prometheus_rules.py."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) is not installed")
    docs = [d for f in sorted((ROOT / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())
            if d and d["apiVersion"] != "monitoring.coreos.com/v1"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    broken = next(d for d in docs if d["kind"] == "Deployment")
    broken = {**broken, "spec": {**broken["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)


def test_dockerfile_is_non_root_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert "USER facerecon" in text and "HEALTHCHECK" in text and "ARG VARIANT=cpu" in text

