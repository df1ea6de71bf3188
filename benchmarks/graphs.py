"""Latency of the two ONNX graphs of a model store on one onnxruntime provider stack, and on a GPU
the TensorRT fp16 engine build (the first run fills the engine cache that the service then reuses).

    python benchmarks/graphs.py --model-store model_store --out benchmarks/results/graphs-cpu.md
    python benchmarks/graphs.py --model-store model_store \\
        --providers TensorrtExecutionProvider,CUDAExecutionProvider --tensorrt-cache var/tensorrt \\
        --out benchmarks/results/graphs-tensorrt.md

Sessions are opened exactly as the service opens them (``service.engine.runtime.Model.load``: same
options, same optimisation profile, same cache keys), so ``FACERECON_TENSORRT_CACHE_DIR`` pointed at
the same folder starts the service with the engines already built. Inputs are seeded random arrays
of the manifest's shapes; the graphs' cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.engine.runtime import Model  # noqa: E402
from service.model_store import ModelStoreError  # noqa: E402
from service.settings import Settings  # noqa: E402


def describe_machine() -> str:
    """CPU, cores, GPU (when nvidia-smi answers) and onnxruntime; no torch, which serving machines lack."""
    import os
    import platform
    import subprocess

    import onnxruntime as ort

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10).stdout.strip().replace("\n", ", ")
    except (OSError, subprocess.TimeoutExpired):
        gpu = ""
    return f"{cpu}, {os.cpu_count()} cores" + (f", {gpu}" if gpu else "") + f", onnxruntime {ort.__version__}"


def feeds_for(inputs: list[dict], batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {i["name"]: rng.random([batch if d == "batch" else d for d in i["shape"]], dtype=np.float32) for i in inputs}


def time_graph(session, feeds: dict[str, np.ndarray], runs: int) -> tuple[float, list[float]]:
    """Seconds of the first run (engine build / warm-up) and of ``runs`` more."""
    start = time.perf_counter()
    session.run(None, feeds)
    first = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return first, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/graphs.py")
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--model-name")
    parser.add_argument("--model-version")
    parser.add_argument("--providers", default="CPUExecutionProvider", help="comma-separated, in order")
    parser.add_argument("--tensorrt-cache", type=Path, help="TensorRT engine cache folder (created)")
    parser.add_argument("--no-fp16", action="store_true", help="TensorRT engines in fp32")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (CPU)")
    parser.add_argument("--batches", default="1,8", help="batch sizes to time; the largest bounds the TensorRT profile")
    parser.add_argument("--float-graphs", choices=("auto", "yes", "no"), default="auto",
                        help="run an int8 store's graphs in float32 (FACERECON_FLOAT_GRAPHS); auto: as the service "
                             "does, float when the first provider is a GPU one")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.tensorrt_cache:
        args.tensorrt_cache.mkdir(parents=True, exist_ok=True)
    try:
        providers = args.providers.split(",")
        floats = {"auto": None, "yes": True, "no": False}[args.float_graphs]
        model = Model.load(args.model_store, args.model_name, args.model_version, providers, args.threads,
                           args.tensorrt_cache, not args.no_fp16, max(batches),
                           Settings(providers=providers, float_graphs=floats).runs_float_graphs)
    except ModelStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    rows = []
    for part, session in (("geometry", model.geometry), ("texture", model.texture)):
        inputs = model.store.manifest["onnx"][part]["inputs"]
        for batch in batches:
            first, times = time_graph(session, feeds_for(inputs, batch, rng), args.runs)
            rows.append((part, batch, first, statistics.median(times), max(times)))
            print(f"{part} batch {batch}: first run {first * 1e3:.1f} ms, median {rows[-1][3] * 1e3:.2f} ms")
    lines = [f"# Graph latency: {model.name} {model.version}", "",
             f"Providers loaded: {', '.join(model.providers)}"
             + (f" (TensorRT {'fp32' if args.no_fp16 else 'fp16'}, cache `{args.tensorrt_cache}`)" if args.tensorrt_cache else "")
             + f"; graphs {'in float32 (dequantized)' if model.float_graphs else 'as stored'}"
             + f"; {args.threads} intra-op threads; {args.runs} timed runs after the first.", "",
             f"Machine: {describe_machine()}.", "", "Command: `python benchmarks/graphs.py "
             + " ".join(a for a in (argv if argv is not None else sys.argv[1:])) + "`", "",
             "| graph | batch | first run (build / warm-up) | median | per face | max |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {part} | {b} | {f * 1e3:.1f} ms | {m * 1e3:.2f} ms | {m / b * 1e3:.2f} ms | {x * 1e3:.2f} ms |"
              for part, b, f, m, x in rows]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
