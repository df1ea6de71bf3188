"""Latency of a running facerecon server: p50/p95/p99, throughput and peak memory per format; with
``--floor``, the end-to-end p50 at concurrency 1 beside the networks' floor, measured in the same run.

    python -m service --model-store model_store &          # in another shell
    python benchmarks/latency.py --url http://127.0.0.1:8000 --out benchmarks/results/latency.md

    python benchmarks/latency.py --serve --floor --out benchmarks/results/latency-floor.md

Drives ``POST /v1/reconstruct`` with the real photos of ``../shared/eval/photos`` at each
concurrency level. Peak memory is the server's VmHWM, read from /proc when ``--pid`` is given.

``--floor`` (see :func:`floor_report`): one photo (by default trump.jpg cut to 4:3 and resized to
640x480, one face) sent one request at a time, alternating round by round with the floor: the
geometry graph and the texture graph at batch 1 run in this process, in sessions opened exactly as
the service opens them (``Model.load`` with ``Settings()``: providers, intra-op threads, no spinning),
the geometry graph twice when the server's response shows a recrop. Alternating gives both figures
the same load on a shared machine. Each round the graphs run again at once (the warm floor), which shows
whether this process's idling between its runs slows them. ``--serve`` starts ``python -m service`` from this checkout on a
free port (the environment's FACERECON_* settings apply to it and to the floor alike); ``--url`` may
be repeated as ``label=URL`` to compare servers (say, two checkouts) in one run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "eval" / "photos"
FLOOR_PHOTO = PHOTOS / "trump.jpg"


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


def photo_640x480(path: Path) -> bytes:
    """``path``'s centre cut to 4:3, resized to 640x480 and encoded as a JPEG (quality 95)."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    cw, ch = (round(h * 4 / 3), h) if w / h > 4 / 3 else (w, round(w * 3 / 4))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    buffer = io.BytesIO()
    image.crop((x0, y0, x0 + cw, y0 + ch)).resize((640, 480), Image.BICUBIC).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def timings_of(response: httpx.Response, fmt: str) -> dict[str, float]:
    """The response's ``timings_ms``: in the JSON body, or a GLB's ``asset.extras`` (its first chunk)."""
    if fmt == "json":
        return response.json()["timings_ms"]
    if fmt == "glb":
        length = struct.unpack_from("<I", response.content, 12)[0]
        return json.loads(response.content[20:20 + length])["asset"]["extras"]["timings_ms"]
    return {}


def serve(model_store: Path) -> tuple[subprocess.Popen, str]:
    """``python -m service`` from this checkout on a free local port, once ready: (process, url)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "service", "--model-store", str(model_store), "--host",
                                "127.0.0.1", "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}: run `python -m service` to see why")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit("the server was not ready within 180 s")


class Floor:
    """The two graphs at batch 1 in this process, in sessions opened as the service opens them.

    Inputs are seeded random arrays of the manifest's shapes (as ``benchmarks/graphs.py``): the graphs'
    cost on them is their cost without denormal inputs, which the service's own feeds no longer hold.
    """

    def __init__(self, model_store: Path, name: str | None, version: str | None):
        sys.path.insert(0, str(REPO))
        from service.engine.runtime import Model
        from service.settings import Settings

        settings = Settings(model_store=model_store)
        self.threads = settings.intra_op_threads
        self.model = Model.load(settings.model_store, name, version, settings.providers, settings.intra_op_threads,
                                settings.tensorrt_cache_dir, settings.tensorrt_fp16, settings.max_batch_size)
        rng = np.random.default_rng(0)
        self.feeds = {part: {i["name"]: rng.random([1 if d == "batch" else d for d in i["shape"]], dtype=np.float32)
                             for i in self.model.store.manifest["onnx"][part]["inputs"]}
                      for part in ("geometry", "texture")}

    def __call__(self, geometry_runs: int) -> dict[str, float]:
        """Milliseconds of ``geometry_runs`` geometry runs and one texture run, and their sum (``floor``);
        then the same again at once (``warm``), the least the graphs can cost: this process sits idle while
        a request is served, and the warm runs show whether that idling slows the first (with one server
        it did not: 21.4 against 21.5 ms, benchmarks/results/latency-warm-floor.md)."""
        out = {}
        for when in ("", "warm "):
            for part, runs in (("geometry", geometry_runs), ("texture", 1)):
                start = time.perf_counter()
                for _ in range(runs):
                    (self.model.run_geometry if part == "geometry" else self.model.run_texture)(self.feeds[part])
                out[when + part] = (time.perf_counter() - start) * 1000
            out[when + "floor"] = out[when + "geometry"] + out[when + "texture"]
        return out


def floor_report(clients: dict[str, httpx.Client], floor: Floor, photo: bytes, photo_name: str, fmt: str,
                 texture_size: int, requests: int) -> str:
    """End-to-end p50 at concurrency 1 per server (``clients``: label -> a client with the server's
    ``base_url``), the floor, their ratio and each stage's p50: the servers and the floor take turns,
    round by round, in an order that rotates so none always follows another. A Markdown table."""
    urls = clients

    def post(label: str) -> tuple[float, dict[str, float]]:
        start = time.perf_counter()
        r = clients[label].post("/v1/reconstruct", files={"image": ("photo.jpg", photo, "image/jpeg")},
                                data={"format": fmt, "texture_size": str(texture_size)})
        elapsed = (time.perf_counter() - start) * 1000
        if r.status_code != 200:
            raise SystemExit(f"{label}: {r.status_code} {r.text[:300]}")
        return elapsed, timings_of(r, fmt)

    warm = {label: [post(label) for _ in range(3)][-1][1] for label in urls}
    recrops = {label: "recrop" in t for label, t in warm.items()}
    if len(set(recrops.values())) > 1:
        raise SystemExit(f"the servers differ in the recrop ({recrops}): one floor cannot serve them all")
    geometry_runs = 2 if next(iter(recrops.values())) else 1
    for _ in range(3):
        floor(geometry_runs)
    load_before = os.getloadavg()
    e2e = {label: [] for label in urls}
    stages = {label: {} for label in urls}
    floors: list[dict[str, float]] = []
    turns = [*urls, None]
    for i in range(requests):
        for label in turns[i % len(turns):] + turns[:i % len(turns)]:
            if label is None:
                floors.append(floor(geometry_runs))
                continue
            ms, timings = post(label)
            e2e[label].append(ms)
            for stage, v in timings.items():
                stages[label].setdefault(stage, []).append(v)
    load_after = os.getloadavg()

    p50 = statistics.median
    floor_ms = p50([f["floor"] for f in floors])
    geometry_ms, texture_ms = p50([f["geometry"] for f in floors]), p50([f["texture"] for f in floors])
    warm_ms = p50([f["warm floor"] for f in floors])
    names = list(urls)
    lines = [f"Photo {photo_name}, `format={fmt}`, {texture_size}² texture, concurrency 1, {requests} rounds (each: "
             "one request per server and one floor measurement, in rotating order) after 3 warm-up requests each.",
             f"Floor: geometry graph ×{geometry_runs}{' (the server recrops)' if geometry_runs == 2 else ''} + texture "
             f"graph at batch 1, in-process, {floor.threads} intra-op threads, the service's session options, model "
             f"{floor.model.name} {floor.model.version}.",
             f"Load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after.", "",
             "| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names),
             "| end-to-end p50 ms | " + " | ".join(f"{p50(e2e[n]):.1f}" for n in names) + " |",
             "| end-to-end p95 ms | " + " | ".join(f"{percentile(e2e[n], 95):.1f}" for n in names) + " |",
             "| network floor p50 ms (each round's graph runs summed) | " + " | ".join(f"{floor_ms:.1f}" for _ in names)
             + " |",
             f"| (floor's geometry p50 ms, texture p50 ms) | " + " | ".join(
                 f"{geometry_ms:.1f}, {texture_ms:.1f}" for _ in names) + " |",
             "| **ratio** (end-to-end p50 / floor p50) | " + " | ".join(
                 f"**{p50(e2e[n]) / floor_ms:.2f}**" for n in names) + " |",
             "| warm floor p50 ms (the same graphs run again at once: their least cost) | " + " | ".join(
                 f"{warm_ms:.1f}" for _ in names) + " |",
             "| ratio to the warm floor | " + " | ".join(f"{p50(e2e[n]) / warm_ms:.2f}" for n in names) + " |"]
    stage_names = list(dict.fromkeys(s for n in names for s in stages[n]))
    lines += [f"| stage `{s}` p50 ms | " + " | ".join(f"{p50(stages[n][s]):.1f}" if s in stages[n] else "–"
                                                    for n in names) + " |" for s in stage_names]
    lines.append("| sum of stages p50 ms | " + " | ".join(
        f"{sum(p50(v) for v in stages[n].values()):.1f}" for n in names) + " |")
    lines.append("| end-to-end p50 less the stages' (upload, HTTP, hand-offs; a GLB's `export`, which its own "
                 "figures cannot hold) | " + " | ".join(
                     f"{p50(e2e[n]) - sum(p50(v) for v in stages[n].values()):.1f}" for n in names) + " |")
    return "\n".join(lines)


def describe_machine() -> str:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from graphs import describe_machine as describe

    return describe()


def main_floor(args) -> None:
    urls = {}
    for i, given in enumerate(args.url or []):
        label, found, rest = given.partition("=http")
        label, url = (label, "http" + rest) if found else ("", given)
        urls[label or (f"server {i + 1}" if len(args.url) > 1 else "server")] = url
    process = None
    if args.serve:
        process, urls["this checkout"] = serve(args.model_store)
    if not urls:
        urls["server"] = "http://127.0.0.1:8000"
    try:
        head = httpx.get(f"{next(iter(urls.values()))}/v2/health/live").headers
        floor = Floor(args.model_store, head.get("X-Model-Name"), head.get("X-Model-Version"))
        if args.photo:
            photo, name = (args.photos / args.photo[0]).read_bytes(), args.photo[0]
        else:
            photo, name = photo_640x480(FLOOR_PHOTO), f"{FLOOR_PHOTO.name} cut to 4:3 and resized to 640×480"
        clients = {label: httpx.Client(base_url=url, timeout=60) for label, url in urls.items()}
        body = floor_report(clients, floor, photo, name, args.formats.split(",")[0], args.texture_size, args.requests)
        for client in clients.values():
            client.close()
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    command = "python benchmarks/latency.py " + shlex.join(sys.argv[1:])
    text = (f"# End-to-end latency against the network floor\n\nMachine: {describe_machine()}, "
            f"Python {platform.python_version()}.\n\n`{command}`\n\n" + "\n".join(
                f"- {label}: {url}" for label, url in urls.items()) + "\n\n" + body + "\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", action="append",
                        help="server URL (default http://127.0.0.1:8000); with --floor repeatable as label=URL")
    parser.add_argument("--floor", action="store_true", help="end-to-end p50 at concurrency 1 beside the graphs' floor")
    parser.add_argument("--serve", action="store_true", help="with --floor: start a server from this checkout")
    parser.add_argument("--model-store", type=Path, default=Path("model_store"),
                        help="with --floor: the model folder the floor loads (and --serve serves)")
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--photo", action="append", help="file names under --photos (default: all jpg/png)")
    parser.add_argument("--formats", default="glb,obj,json")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=40, help="per level")
    parser.add_argument("--texture-size", type=int, default=512)
    parser.add_argument("--pid", type=int, help="server process id, for peak memory")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.floor:
        return main_floor(args)
    args.url = (args.url or ["http://127.0.0.1:8000"])[0]

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
