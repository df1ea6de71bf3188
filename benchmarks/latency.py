"""Latency of a running facerecon server: p50/p95/p99, throughput and peak memory per format.

    python -m service --model-store model_store &          # in another shell
    python benchmarks/latency.py --url http://127.0.0.1:8000 --out benchmarks/results/latency.md

Drives ``POST /v1/reconstruct`` with the real photos of ``../shared/eval/photos`` at each
concurrency level. Peak memory is the server's VmHWM, read from /proc when ``--pid`` is given.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import threading
import time
from pathlib import Path

import httpx

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "eval" / "photos"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def peak_rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def run_level(url: str, photos: list[bytes], fmt: str, texture_size: int, concurrency: int, requests: int):
    latencies, failures, lock, counter = [], [], threading.Lock(), iter(range(requests))

    def worker():
        with httpx.Client(timeout=60) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                r = client.post(f"{url}/v1/reconstruct", files={"image": ("p.jpg", photos[i % len(photos)])},
                                data={"format": fmt, "texture_size": str(texture_size)})
                elapsed = time.perf_counter() - start
                with lock:
                    (latencies if r.status_code == 200 else failures).append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return latencies, failures, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--photo", action="append", help="file names under --photos (default: all jpg/png)")
    parser.add_argument("--formats", default="glb,obj,json")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=40, help="per level")
    parser.add_argument("--texture-size", type=int, default=512)
    parser.add_argument("--pid", type=int, help="server process id, for peak memory")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    names = args.photo or sorted(p.name for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    photos = [(args.photos / n).read_bytes() for n in names]
    model = httpx.get(f"{args.url}/v2/health/live").headers.get("X-Model-Name", "?")
    rows = ["| format | concurrency | requests ok / failed | p50 ms | p95 ms | p99 ms | throughput req/s | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|"]
    for fmt in args.formats.split(","):
        run_level(args.url, photos, fmt, args.texture_size, 1, 3)  # warm-up
        for c in (int(v) for v in args.concurrency.split(",")):
            ok, failed, wall = run_level(args.url, photos, fmt, args.texture_size, c, args.requests)
            ms = [v * 1000 for v in ok] or [float("nan")]
            rss = peak_rss_mb(args.pid)
            rows.append(f"| {fmt} | {c} | {len(ok)} / {len(failed)} | {statistics.median(ms):.0f} | "
                        f"{percentile(ms, 95):.0f} | {percentile(ms, 99):.0f} | {len(ok) / wall:.1f} | "
                        f"{'' if rss is None else f'{rss:.0f}'} |")
            print(rows[-1], flush=True)
    header = (f"# Service latency\n\nModel `{model}`, photos {', '.join(names)}, texture {args.texture_size}², "
              f"{args.requests} requests per level.\nMachine: {platform.machine()}, {platform.processor() or '?'}, "
              f"{__import__('os').cpu_count()} CPUs, Python {platform.python_version()}.\n\n")
    table = header + "\n".join(rows) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
