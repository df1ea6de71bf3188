"""Overload: many uploads at once against a running facerecon server, each sent once.

    python -m service --model-store model_store &          # in another shell
    python benchmarks/overload.py --url http://127.0.0.1:8000 --concurrency 100 --out benchmarks/results/overload.md

Every request is an upload of a real photo (``../shared/eval/photos``) released at the same moment.
A request the server cannot queue should be refused at once (503 with ``Retry-After``, before its
upload is read); every request it accepts should succeed. Reports how many of each, and the latency
of the refusals beside that of the accepted requests, as the client sees them (the server's own
time for a refusal is ``facerecon_request_duration_seconds{format="unknown"}`` in /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from pathlib import Path

import httpx

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "eval" / "photos"


async def burst(url: str, photo: bytes, concurrency: int, fmt: str,
                path: str = "/v1/reconstruct") -> list[tuple[int, float, bool]]:
    """(status, seconds, has Retry-After) of ``concurrency`` uploads released together, each on its own
    connection (one asyncio client: a thread per upload would make the client the bottleneck)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        release = asyncio.Event()

        async def one() -> tuple[int, float, bool]:
            await release.wait()
            began = time.perf_counter()
            try:
                r = await client.post(f"{url}{path}", params={"format": fmt},
                                      files={"image": ("photo.jpg", photo, "image/jpeg")})
                return r.status_code, time.perf_counter() - began, "retry-after" in r.headers
            except httpx.HTTPError:  # a refused upload may see its connection closed mid-send
                return 0, time.perf_counter() - began, False

        tasks = [asyncio.create_task(one()) for _ in range(concurrency)]
        await asyncio.sleep(0.1)  # every task waiting at the release
        release.set()
        return list(await asyncio.gather(*tasks))


def report(results: list[tuple[int, float, bool]], floor: list[tuple[int, float, bool]], concurrency: int, fmt: str,
           photo: str) -> str:
    ok = [s for code, s, _ in results if code == 200]
    refused = [s for code, s, retry in results if code == 503 and retry]
    other = sorted({code for code, _, _ in results} - {200, 503})

    def p50(values):
        return f"{1000 * statistics.median(values):.0f} ms" if values else "–"

    return "\n".join([
        "# Overload: uploads released at once", "",
        f"`python benchmarks/overload.py --concurrency {concurrency} --format {fmt}` with `{photo}`; "
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}.", "",
        "| requests | accepted and answered 200 | refused 503 with Retry-After | anything else | accepted p50 | refusal p50 "
        "| the same uploads answered at once by the idle server (floor) p50 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {len(results)} | {len(ok)} | {len(refused)} | {len(results) - len(ok) - len(refused)}"
        f"{' (' + ', '.join(map(str, other)) + ')' if other else ''} | {p50(ok)} | {p50(refused)} "
        f"| {p50([s for _, s, _ in floor])} |", "",
        "The floor is the same burst of uploads sent first to a route that answers at once without reading them "
        "(`POST /v2/health/live`, a 405), while the server is idle: what this client and the HTTP stack take for "
        f"{concurrency} uploads released together on this machine, before any refusal logic.", ""])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--format", default="glb")
    parser.add_argument("--photo", type=Path, default=PHOTOS / "JianzhuGuo.jpg")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    photo = args.photo.read_bytes()
    asyncio.run(burst(args.url, photo, args.concurrency, args.format, path="/v2/health/live"))  # warm-up
    floor = asyncio.run(burst(args.url, photo, args.concurrency, args.format, path="/v2/health/live"))
    results = asyncio.run(burst(args.url, photo, args.concurrency, args.format))
    text = report(results, floor, args.concurrency, args.format, args.photo.name)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
