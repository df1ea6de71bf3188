"""A report's two files: ``<out>/<name>.json`` (the machine and the results) and ``<out>/<name>.md``."""

from __future__ import annotations

import json
from pathlib import Path

from training.machine import describe as machine


def write_report(out: Path, name: str, results: dict, lines: list[str]) -> str:
    """Write ``results`` with the machine as JSON and ``lines`` as Markdown into ``out``; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    text = "\n".join(lines) + "\n"
    (out / f"{name}.md").write_text(text)
    return text
