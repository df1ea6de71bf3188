"""Fuzz the HTTP API with schemathesis from its own OpenAPI schema: every check, every phase.

    python benchmarks/fuzz.py --out benchmarks/results/fuzz.md                # serves model_store itself
    python benchmarks/fuzz.py --url http://127.0.0.1:8000 --out fuzz.md       # or a server already running

Runs ``schemathesis run <url>/openapi.json -c all --phases examples,coverage,fuzzing,stateful`` with
``benchmarks/schemathesis.toml`` and the hooks of ``benchmarks/fuzz_hooks.py`` (a real photo in
schema-valid uploads), reads its NDJSON report and writes the figures: cases, failures, 5xx responses,
cases per phase and operation, and the statuses the stateful phase got from the job routes it reached
through the OpenAPI links of ``POST /v1/jobs``. The server it starts itself uses small textures and a
roomy job queue (see ``SERVER_SETTINGS``), so that the run measures the contract, not the queue.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "eval" / "photos" / "JianzhuGuo.jpg"
PHASES = "examples,coverage,fuzzing,stateful"
JOB_ROUTES = ("GET /v1/jobs/{job_id}", "GET /v1/jobs/{job_id}/result")
SERVER_SETTINGS = {"FACERECON_DEFAULT_TEXTURE_SIZE": "64", "FACERECON_MAX_TEXTURE_SIZE": "256",
                   "FACERECON_MAX_QUEUED_JOBS": "100000", "FACERECON_QUEUE_SIZE": "64"}


@dataclass
class Figures:
    """What one schemathesis run found, read from its NDJSON report."""

    exit_code: int
    seconds: float
    command: str
    cases: int = 0
    requests: int = 0
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)  # "check on METHOD path (status)", one per failing case and check
    by_phase: Counter = field(default_factory=Counter)  # cases
    by_operation: Counter = field(default_factory=Counter)  # cases
    by_mode: Counter = field(default_factory=Counter)  # cases, positive / negative
    statuses: Counter = field(default_factory=Counter)  # responses, by status code
    stateful: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # operation -> statuses
    problem_types: Counter = field(default_factory=Counter)  # positive cases' 4xx, by problem type

    def reached(self, operation: str) -> bool:
        """Whether the stateful phase got past 404 on ``operation`` (a real job id, from a link)."""
        return any(status != 404 for status in self.stateful.get(operation, {}))


def read_report(path: Path, figures: Figures) -> Figures:
    """Fill ``figures`` from a schemathesis NDJSON report (one ``ScenarioFinished`` event per scenario)."""
    seen: set[str] = set()
    with open(path) as report:  # line by line: it holds every response body, GBs for a large run
        for line in report:
            event = json.loads(line).get("ScenarioFinished")
            if event:
                add_scenario(event, figures, seen)
    return figures


def add_scenario(event: dict, figures: Figures, seen: set[str]) -> None:
    phase, recorder = event["phase"], event["recorder"]
    for case_id, entry in recorder.get("cases", {}).items():
        if case_id in seen:
            continue
        seen.add(case_id)
        case = entry["value"]
        operation = f"{case['method']} {case['path']}"
        mode = ((case.get("meta") or {}).get("generation") or {}).get("mode", "unknown")
        figures.cases += 1
        figures.by_phase[phase] += 1
        figures.by_operation[operation] += 1
        figures.by_mode[mode] += 1
        response = (recorder.get("interactions", {}).get(case_id) or {}).get("response")
        status = response["status_code"] if response else None
        if response:
            figures.requests += 1
            figures.statuses[status] += 1
            figures.server_errors += status >= 500
            if phase == "stateful":
                figures.stateful[operation][status] += 1
            if mode == "positive" and 400 <= status < 500:
                figures.problem_types[problem_type(response)] += 1
        for check in recorder.get("checks", {}).get(case_id, []):
            if check["status"] == "failure":
                figures.failures.append(f"{check['name']} on {operation} ({status})")


def problem_type(response: dict) -> str:
    try:
        body = json.loads(base64.b64decode(response["content"]["$base64"]))
        return f"{response['status_code']} {str(body.get('type', '')).rsplit('/', 1)[-1]}"
    except (KeyError, ValueError, TypeError, AttributeError):
        return f"{response['status_code']} (not a problem document)"


def run_schemathesis(url: str, max_examples: int, seed: int, workdir: Path, photo: Path = PHOTO,
                     timeout_s: float = 3600) -> Figures:
    """One schemathesis run against ``url`` (a running server); the CLI's output goes to workdir/output.txt."""
    report_dir = workdir / "report"
    command = [str(Path(sys.executable).parent / "schemathesis"), "--config-file",
               str(ROOT / "benchmarks" / "schemathesis.toml"), "run", f"{url}/openapi.json", "-c", "all",
               "--phases", PHASES, "-n", str(max_examples), "--seed", str(seed), "--request-timeout", "60",
               "--report", "ndjson", "--report-dir", str(report_dir), "--no-color"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(ROOT / "benchmarks" / "fuzz_hooks.py"),
           "FACERECON_FUZZ_PHOTO": str(photo)}
    start = time.monotonic()
    with open(workdir / "output.txt", "w") as output:
        done = subprocess.run(command, cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT,
                              timeout=timeout_s)  # cwd: schemathesis keeps a cache folder there
    shown = " ".join(["schemathesis"] + command[1:]).replace(str(ROOT) + "/", "")
    figures = Figures(done.returncode, time.monotonic() - start, shown.replace(str(report_dir), "REPORT_DIR"))
    (report,) = report_dir.glob("*.ndjson")
    return read_report(report, figures)


@contextmanager
def serve(model_store: Path, workdir: Path) -> Iterator[str]:
    """``python -m service`` on a free port of 127.0.0.1 with SERVER_SETTINGS, until it is ready."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, **SERVER_SETTINGS, "FACERECON_JOB_STORE": str(workdir / "jobs.db")}
    log = open(workdir / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "service", "--model-store", str(model_store),
                               "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"the server exited; see {workdir / 'server.log'}"
            assert time.monotonic() < deadline, "the server did not become ready in 180 s"
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def markdown(figures: Figures, served: str) -> str:
    rows = lambda counter: "\n".join(f"| {k} | {v} |" for k, v in sorted(counter.items(), key=str))  # noqa: E731
    stateful = "\n".join(f"| {op} | {', '.join(f'{s}: {n}' for s, n in sorted(c.items()))} |"
                         for op, c in sorted(figures.stateful.items()))
    failures = "\n".join(f"- {f}" for f in figures.failures[:20]) or "none"
    return f"""# API fuzz run (schemathesis, every check, every phase)

`{figures.command}` against {served}; machine: {cpu_model()}, {os.cpu_count()} CPUs; {figures.seconds:.0f} s.

| figure | value |
|---|---|
| schemathesis exit code | {figures.exit_code} |
| cases | {figures.cases} |
| responses | {figures.requests} |
| failures (case x check) | {len(figures.failures)} |
| 5xx responses | {figures.server_errors} |
| stateful phase reached `GET /v1/jobs/{{job_id}}` | {figures.reached(JOB_ROUTES[0])} |
| stateful phase reached `GET /v1/jobs/{{job_id}}/result` | {figures.reached(JOB_ROUTES[1])} |

Baseline: before issue 26, the same kind of run (`-c all`, all phases, 3,375 cases) found 7 failures and never
reached the job routes past 404; the schema now states what the server enforces.

Failures: {failures}

| phase | cases |
|---|---|
{rows(figures.by_phase)}

| operation | cases |
|---|---|
{rows(figures.by_operation)}

| generation mode | cases |
|---|---|
{rows(figures.by_mode)}

| status | responses |
|---|---|
{rows(figures.statuses)}

Schema-valid cases refused with a 4xx, by problem type (allowed: a box that misses the photo or frames a
face under min_face_px, an option given in the query and the form with different values, a job id that
does not exist or a job not finished):

| status and problem type | cases |
|---|---|
{rows(figures.problem_types)}

Stateful phase, statuses per operation:

| operation | statuses |
|---|---|
{stateful}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server; by default one is started on --model-store")
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--max-examples", type=int, default=400, help="schemathesis -n: cases per operation and phase")
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--photo", type=Path, default=PHOTO, help="the photo schema-valid uploads carry")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.md")
    args = parser.parse_args(argv)
    if not args.photo.is_file():
        print(f"no photo at {args.photo} (../shared/eval/photos); pass --photo", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        workdir = Path(tmp)
        if args.url:
            figures, served = run_schemathesis(args.url, args.max_examples, args.seed, workdir, args.photo), args.url
        else:
            with serve(args.model_store, workdir) as url:
                figures = run_schemathesis(url, args.max_examples, args.seed, workdir, args.photo)
            served = f"`python -m service --model-store {args.model_store.name}` with {SERVER_SETTINGS}"
        print((workdir / "output.txt").read_text()[-3000:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(figures, served))
    print(f"{figures.cases} cases, {len(figures.failures)} failures, {figures.server_errors} 5xx -> {args.out}")
    ok = figures.exit_code == 0 and not figures.failures and not figures.server_errors
    return 0 if ok and all(figures.reached(op) for op in JOB_ROUTES) else 1


if __name__ == "__main__":
    sys.exit(main())
