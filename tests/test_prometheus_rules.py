"""The Prometheus rules, their PrometheusRule twin, and the Grafana wiring, checked offline.

promtool (Debian's ``prometheus`` package, installed with apt-get when missing and possible) checks
deploy/prometheus/rules.yml and runs its unit tests, rules.test.yml: each alert fires on one set of
input series and stays quiet on another.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

from service_fixtures import debian_tool

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the rules")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
GRAFANA = ROOT / "deploy" / "grafana"


def alerts(groups: list[dict]) -> dict[str, dict]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


@pytest.fixture(scope="module")
def promtool() -> str:
    return debian_tool("promtool", "prometheus")


def run(*args, cwd=PROMETHEUS) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules(promtool):
    done = run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_pass(promtool):
    done = run(promtool, "test", "rules", "rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_can_fail(promtool, tmp_path):
    """The firing cases hold the thresholds: the same tests over a 5xx threshold of 3 % fail."""
    rules = RULES.read_text()
    assert "ratio_rate5m > 0.01\n" in rules
    (tmp_path / "rules.yml").write_text(rules.replace("ratio_rate5m > 0.01\n", "ratio_rate5m > 0.03\n"))
    (tmp_path / "rules.test.yml").write_text((PROMETHEUS / "rules.test.yml").read_text())
    done = run(promtool, "test", "rules", "rules.test.yml", cwd=tmp_path)
    assert done.returncode != 0 and "FacereconHighErrorRatio" in done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    tests = yaml.safe_load((PROMETHEUS / "rules.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for name in alerts(yaml.safe_load(RULES.read_text())["groups"]):
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no case where it stays quiet"


def test_every_alert_is_explained_with_a_runbook():
    """summary and a description with numbers on each alert, and its runbook section in docs/operations.md."""
    docs = (ROOT / "docs" / "operations.md").read_text()
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in docs.splitlines() if line.startswith("#")}
    for name, rule in alerts(yaml.safe_load(RULES.read_text())["groups"]).items():
        annotations = rule["annotations"]
        assert annotations["summary"] and re.search(r"\d", annotations["description"]), name  # its numbers
        assert annotations["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name.lower() in headings, f"{name}: no section in docs/operations.md"


def load_writer():
    spec = importlib.util.spec_from_file_location("prometheusrule", PROMETHEUS / "prometheusrule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_prometheusrule_is_written_from_the_rules():
    """k8s/prometheusrule.yaml is what deploy/prometheus/prometheusrule.py writes now (make prometheusrule)."""
    manifest = (ROOT / "k8s" / "prometheusrule.yaml").read_text()
    assert manifest == load_writer().render(RULES.read_text()), "run `make prometheusrule`"
    assert yaml.safe_load(manifest)["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_the_prometheusrule_matches_the_operator_schema(promtool, tmp_path):
    """Strict against the CRD's fields (an unknown field or a malformed duration fails), and its groups
    pass promtool as a rules file of their own."""
    schema = json.loads((PROMETHEUS / "prometheusrule.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    rule = yaml.safe_load((ROOT / "k8s" / "prometheusrule.yaml").read_text())
    validator.validate(rule)
    broken_alert = {**rule["spec"]["groups"][1]["rules"][0], "for": "ten minutes"}
    misspelt = {**rule["spec"]["groups"][1]["rules"][0], "anotations": {}}
    for bad in (broken_alert, misspelt):
        broken = {**rule, "spec": {"groups": [{"name": "g", "rules": [bad]}]}}
        assert not validator.is_valid(broken)
    groups = tmp_path / "groups.yml"
    groups.write_text(yaml.safe_dump(rule["spec"]))
    done = run(promtool, "check", "rules", str(groups))
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_loads_the_rules_and_provisions_grafana():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = {volume.split(":")[1]: ROOT / volume.split(":")[0] for volume in compose["prometheus"]["volumes"]}
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    assert [mounts["/etc/prometheus/" + name] for name in config["rule_files"]] == [RULES]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"][0] == "facerecon:8000"

    mounts = {volume.split(":")[1]: ROOT / volume.split(":")[0] for volume in compose["grafana"]["volumes"]}
    provisioning = mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "facerecon.yml").read_text())["providers"]
    folder = mounts[provider["options"]["path"]]
    dashboard = json.loads((folder / "facerecon.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"] and panel["targets"], panel["title"]
