"""Benchmark scripts run on the tiny store, and the TensorRT session options they and the service share."""

import importlib.util
from pathlib import Path

import pytest

from service_fixtures import tiny_store

ROOT = Path(__file__).resolve().parents[1]


def test_graph_benchmark_on_the_tiny_store(tmp_path, tmp_path_factory, kit):
    """benchmarks/graphs.py times both graphs with the service's own session setup and writes its table;
    a provider this onnxruntime lacks is refused with a message, not a traceback."""
    spec = importlib.util.spec_from_file_location("graphs", ROOT / "benchmarks" / "graphs.py")
    graphs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graphs)
    store = tiny_store(tmp_path_factory, kit)
    out = tmp_path / "graphs.md"
    assert graphs.main(["--model-store", str(store), "--batches", "1,2", "--runs", "2", "--out", str(out)]) == 0
    table = out.read_text()
    assert "CPUExecutionProvider" in table and table.count("| geometry |") == 2 and table.count("| texture |") == 2
    assert "graphs as stored" in table  # on CPU the service runs the graphs as stored
    assert graphs.main(["--model-store", str(store), "--batches", "1", "--runs", "1", "--float-graphs", "yes",
                        "--out", str(out)]) == 0
    assert "graphs in float32 (dequantized)" in out.read_text()
    assert graphs.main(["--model-store", str(store), "--providers", "NoSuchExecutionProvider"]) == 2


def test_detect_benchmark_times_both_detectors(tmp_path):
    """benchmarks/detect.py times YuNet and HOG on the same photo at both sizes and writes its table."""
    spec = importlib.util.spec_from_file_location("detect_bench", ROOT / "benchmarks" / "detect.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    if not bench.DEFAULT_PHOTO.is_file():
        pytest.skip(f"{bench.DEFAULT_PHOTO} absent")
    out = tmp_path / "detect.md"
    assert bench.main(["--runs", "1", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith(("| 640x480", "| 4000x3000"))]
    assert len(rows) == 2 and all(row.split("|")[5].strip() == "2" for row in rows)  # YuNet finds both faces


def test_tensorrt_options_cover_every_input_over_the_batch_range():
    from service.engine.runtime import tensorrt_options

    inputs = [{"name": "image", "shape": ["batch", 3, 32, 32]}, {"name": "p_t", "shape": ["batch", 6]}]
    options = tensorrt_options(inputs, max_batch=8, cache=Path("/tmp/trt"), fp16=True)
    assert options["trt_profile_min_shapes"] == "image:1x3x32x32,p_t:1x6"
    assert options["trt_profile_max_shapes"] == "image:8x3x32x32,p_t:8x6"
    assert options["trt_fp16_enable"] is True and options["trt_engine_cache_path"] == "/tmp/trt"
    assert "trt_engine_cache_enable" not in tensorrt_options(inputs, 8, None)


def test_gpu_providers_preload_cuda_from_pip_packages(monkeypatch):
    """onnxruntime-gpu finds CUDA and cuDNN wheels (the `gpu` extra's nvidia-* packages) only once
    preloaded; a CPU-only provider list leaves them alone."""
    import onnxruntime as ort

    from service.engine import runtime

    calls = []
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: calls.append(1), raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runtime.provider_list(["CPUExecutionProvider"]) == ["CPUExecutionProvider"] and calls == []
    assert runtime.provider_list(["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert calls == [1]


def test_latency_floor_report_on_the_tiny_store(tmp_path_factory, kit):
    """benchmarks/latency.py --floor: requests through the service alternate with the two graphs run
    in-process; the table has the end-to-end p50, the floor (cold and warm), their ratios and each stage's p50 from the
    GLB's own timings."""
    from service.app import create_app
    from service.settings import Settings
    from service_fixtures import photo_bytes, ready_client

    spec = importlib.util.spec_from_file_location("latency", ROOT / "benchmarks" / "latency.py")
    latency = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(latency)
    store = tiny_store(tmp_path_factory, kit)
    app = create_app(Settings(model_store=store, job_store=str(tmp_path_factory.mktemp("jobs") / "jobs.db")))
    with ready_client(app) as client:
        table = latency.floor_report({"tiny": client}, latency.Floor(store, None, None), photo_bytes(), "photo",
                                     "glb", 64, requests=2)
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| ")}
    e2e, floor = float(rows["end-to-end p50 ms"]), float(rows["network floor p50 ms (each round's graph runs summed)"])
    ratio = float(rows["**ratio** (end-to-end p50 / floor p50)"].strip("*"))
    assert 0 < floor < e2e and ratio == pytest.approx(e2e / floor, rel=0.05)
    warm = float(rows["warm floor p50 ms (the same graphs run again at once: their least cost)"])
    assert 0 < warm < e2e and float(rows["ratio to the warm floor"]) == pytest.approx(e2e / warm, rel=0.05)
    assert float(rows["stage `texture` p50 ms"]) > 0 and "geometry graph ×1 " in table  # YuNet: no recrop
