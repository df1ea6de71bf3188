"""The loaded model: a verified model store and one onnxruntime session per graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.model_store import ModelStore, ModelStoreError, find_model_store, load_model_store

GEOMETRY_OUTPUTS = ("a_id", "a_exp", "p_t", "p_l", "p_h")
TEXTURE_INPUTS = ("p_t", "image", "heatmaps", "uv_grid", "uv_visibility")


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Requests already run side by side; more inter-op threads would only oversubscribe the cores.
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def provider_list(names: list[str], trt_cache: Path | None) -> list[Any]:
    available = set(ort.get_available_providers())
    missing = [n for n in names if n not in available]
    if missing:
        raise ModelStoreError(f"onnxruntime providers {missing} are not available here (have {sorted(available)})")
    out: list[Any] = []
    for name in names:
        if name == "TensorrtExecutionProvider" and trt_cache is not None:
            out.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_cache)}))
        else:
            out.append(name)
    return out


@dataclass
class Model:
    store: ModelStore
    geometry: ort.InferenceSession
    texture: ort.InferenceSession
    providers: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, root: Path, name: str | None, version: str | None, providers: list[str], threads: int,
             trt_cache: Path | None = None) -> "Model":
        store = load_model_store(find_model_store(root, name, version))
        chosen = provider_list(providers, trt_cache)
        sessions = {
            part: ort.InferenceSession(str(store.onnx_path(part)), sess_options=session_options(threads),
                                       providers=chosen)
            for part in ("geometry", "texture")
        }
        # onnxruntime silently falls back to CPU when a provider fails to initialise; say so instead.
        loaded = sessions["geometry"].get_providers()
        if loaded[0] != providers[0]:
            raise ModelStoreError(f"asked for providers {providers}, onnxruntime loaded {loaded}")
        return cls(store, sessions["geometry"], sessions["texture"], loaded)

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def version(self) -> str:
        return self.store.version

    def run_geometry(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.geometry.run(list(GEOMETRY_OUTPUTS), feeds)

    def run_texture(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.texture.run(["albedo"], feeds)
