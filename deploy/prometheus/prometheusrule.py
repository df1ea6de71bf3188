"""Write k8s/prometheusrule.yaml: the groups of deploy/prometheus/rules.yml as a PrometheusRule for the
Prometheus operator, so that the two never drift (tests/test_prometheus_rules.py checks the file is current).

    python deploy/prometheus/prometheusrule.py          # (make prometheusrule)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
OUT = ROOT / "k8s" / "prometheusrule.yaml"
HEADER = """\
# Written by deploy/prometheus/prometheusrule.py from deploy/prometheus/rules.yml: edit that file, then
# `make prometheusrule`. For clusters running the Prometheus operator: its Prometheus must select this
# object (ruleSelector / ruleNamespaceSelector; kube-prometheus-stack selects on a `release` label).
"""


class BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as ``|`` blocks, as rules.yml writes them."""


BlockDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def prometheus_rule(groups: list[dict]) -> dict:
    """The PrometheusRule (monitoring.coreos.com/v1) carrying ``groups`` as they are."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "facerecon", "labels": {"app": "facerecon"}},
            "spec": {"groups": groups}}


def render(rules_text: str) -> str:
    """The manifest's text for a rules file's text."""
    rule = prometheus_rule(yaml.safe_load(rules_text)["groups"])
    return HEADER + yaml.dump(rule, Dumper=BlockDumper, sort_keys=False, width=110, allow_unicode=True)


if __name__ == "__main__":
    OUT.write_text(render(RULES.read_text()))
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
