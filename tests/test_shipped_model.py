"""The model committed under model_store/: it verifies, serves through the real app, and reconstructs
real photos well enough (its landmarks near the photos' own 68-point annotations)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.app import create_app
from service.model_store import find_model_store, load_model_store
from service.settings import Settings
from service_fixtures import PHOTOS, ready_client
from training.evaluate.metrics import nme_2d
from training.fitting.pts import read_pts

ROOT = Path(__file__).resolve().parents[1]
MODEL_STORE = ROOT / "model_store"
# Photos of ../shared/eval/photos that come with 68-point annotations, and what the shipped model must
# reach (NME by sqrt(w·h) of the annotation box): on average over them, and on any one of them (the
# mean face placed in the box scores about 14 % on AFLW2000-3D's frontal bin). The README's
# AFLW2000-3D figures are the measure; these four only catch a broken model. 0.2.0: 8.1, 9.1, 2.5,
# 2.9 %; 0.3.0: 7.0, 10.1, 3.1, 2.9 %.
ANNOTATED = ("einstein", "breakingbad", "image_0010", "takeo")
MAX_MEAN_NME = 0.07
MAX_NME = 0.12


@pytest.fixture(scope="module")
def shipped() -> Path:
    try:
        return find_model_store(MODEL_STORE)
    except Exception as error:  # noqa: BLE001 - a checkout without a shipped model says why
        pytest.skip(f"no model under {MODEL_STORE}: {error}")


def test_shipped_model_verifies_and_fits_the_size_budget(shipped):
    store = load_model_store(shipped)  # schema, sha256 of every file, topology invariants
    size_mb = sum(f.stat().st_size for f in shipped.iterdir()) / 2**20
    assert size_mb < 60, f"{shipped} is {size_mb:.1f} MiB; the budget is 60"
    evaluation = store.manifest["evaluation"]
    for graph, outputs in evaluation.get("quantization", {}).get("held_out_error", {}).items():
        # int8 graphs (training.quantize) against the float graphs they came from, on held-out photos' feeds:
        # 0.11.0's largest relative move is p_t's, 6 %; E_pho moved by under 0.0002 (docs/service.md).
        for output, error in outputs.items():
            assert error["mean_abs"] <= 0.1 * error["mean_abs_value"], (graph, output, error)
    parity = evaluation["onnx_parity_max_abs"]
    for graph in ("geometry", "texture"):
        # Weights stored in float16 (training.export.half) differ from the trained network by their rounding.
        # The largest difference is in the identity coefficients (up to ~8 on the export's random inputs):
        # 0.9.0 2.0e-3, 0.11.0 5.0e-3 (a relative 6e-4), which moves A by under 4e-4 canonical units (0.07 mm).
        limit = 6e-3 if stored_in_half(shipped / f"{graph}.onnx") else 1e-4
        assert parity[graph] <= limit, graph
    assert "untrained" not in json.dumps(store.manifest["evaluation"]["trained"])


def test_every_committed_version_verifies():
    """Versions kept beside the default (the float graphs GPU workers pin, say) stay loadable."""
    versions = [v for m in MODEL_STORE.iterdir() if m.is_dir() and not m.name.startswith(".")
                for v in m.iterdir() if v.is_dir() and not v.name.startswith(".")]
    if not versions:
        pytest.skip(f"no model under {MODEL_STORE}")
    for folder in versions:
        load_model_store(folder)


def test_the_gpu_image_serves_the_default_store_with_float_graphs():
    """The GPU image and the k8s config serve the newest store (no version pinned), CUDA first, its int8
    graphs dequantized into float32 at start-up (service.engine.float_graph)."""
    import re

    import onnx

    from service.engine.float_graph import dequantize_graph

    for config in (ROOT / "Dockerfile", ROOT / "k8s" / "configmap.yaml"):
        text = config.read_text()
        assert "FACERECON_MODEL_VERSION" not in text, config.name
        providers = json.loads(re.search(r"FACERECON_PROVIDERS[=:]\s*'([^']+)'", text).group(1))
        floats = re.search(r"FACERECON_FLOAT_GRAPHS[=:]\s*\"?(\w+)", text).group(1)
        settings = Settings(providers=providers, float_graphs=floats)
        assert providers[0] == "CUDAExecutionProvider" and settings.runs_float_graphs, config.name
    folder = find_model_store(MODEL_STORE)
    for graph in ("geometry", "texture"):
        model = dequantize_graph(onnx.load(str(folder / f"{graph}.onnx")))
        assert not {n.op_type for n in model.graph.node} & {"QuantizeLinear", "DequantizeLinear"}, graph


def stored_in_half(path: Path) -> bool:
    import onnx

    return any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(path)).graph.initializer)


@pytest.fixture(scope="module")
def client(shipped, tmp_path_factory):
    settings = Settings(model_store=MODEL_STORE, job_store=str(tmp_path_factory.mktemp("shipped_jobs") / "jobs.db"))
    with ready_client(create_app(settings)) as client:
        yield client


def test_landmarks_on_annotated_photos(client):
    nmes = {}
    for name in ANNOTATED:
        photo = next((p for p in PHOTOS.glob(f"{name}.*") if p.suffix != ".pts"), None)
        if photo is None or not (PHOTOS / f"{name}.pts").is_file():
            pytest.skip(f"{name} and its .pts not found in {PHOTOS}")
        truth = read_pts(PHOTOS / f"{name}.pts")
        lo, hi = truth.min(0), truth.max(0)
        box = ",".join(f"{v:.1f}" for v in (*lo, *hi))
        response = client.post("/v1/reconstruct", files={"image": (photo.name, photo.read_bytes())},
                               data={"format": "json", "box": box})
        assert response.status_code == 200, response.text
        (face,) = response.json()["faces"]
        nmes[name] = nme_2d(np.array(face["landmarks68"])[:, :2], truth)
    assert np.mean(list(nmes.values())) < MAX_MEAN_NME, nmes
    assert max(nmes.values()) < MAX_NME, nmes
