"""The loaded model: a verified model store and one onnxruntime session per graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.model_store import ModelStore, ModelStoreError, find_model_store, load_model_store
from service.settings import GPU_PROVIDERS, Settings

GEOMETRY_OUTPUTS = ("a_id", "a_exp", "p_t", "p_l", "p_h")
# A network with a linear basis also gives ICT's identity coefficients and blendshape weights, after the above.
COEFFICIENT_OUTPUTS = ("id_coeffs", "exp_weights")
TEXTURE_INPUTS = ("p_t", "image", "heatmaps", "uv_grid", "uv_visibility")


def float_graph(path: Path) -> bytes:
    """The graph at ``path`` computed in float32 (``service.engine.float_graph``), for a session."""
    try:
        from .float_graph import float_graph_bytes
    except ImportError as e:  # the serve extra has no onnx: CPU workers run the stored graphs
        raise ModelStoreError(f"float graphs need the onnx package (the gpu extra): {e}") from e
    return float_graph_bytes(path)


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Requests already run side by side; more inter-op threads would only oversubscribe the cores.
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Two sessions share the cores, one right after the other: threads left spinning after the geometry
    # graph starve the texture graph (measured on 2 cores: 37 + 52 ms per face spinning, 17 + 26 ms not).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def provider_list(names: list[str], tensorrt: dict[str, Any] | None = None) -> list[Any]:
    """``names`` as onnxruntime wants them, TensorRT with its options; refuses providers not built in."""
    available = set(ort.get_available_providers())
    missing = [n for n in names if n not in available]
    if missing:
        raise ModelStoreError(f"onnxruntime providers {missing} are not available here (have {sorted(available)})")
    if GPU_PROVIDERS & set(names) and hasattr(ort, "preload_dlls"):
        # CUDA and cuDNN installed as pip packages (nvidia-*) are found only when loaded first; a no-op otherwise.
        ort.preload_dlls()
    return [(name, tensorrt) if name == "TensorrtExecutionProvider" and tensorrt else name for name in names]


def tensorrt_options(inputs: list[dict], max_batch: int, cache: Path | None, fp16: bool = True) -> dict[str, Any]:
    """TensorRT options for one graph: fp16, one optimisation profile over batch sizes 1..max_batch
    (so the engine is built once, not per batch size), and an engine cache that survives restarts.

    ``inputs``: the graph's inputs as the manifest lists them (name, shape with ``"batch"``).
    """
    def shapes(batch: int) -> str:
        return ",".join(f"{i['name']}:" + "x".join(str(batch if d == "batch" else d) for d in i["shape"]) for i in inputs)

    options: dict[str, Any] = {"trt_fp16_enable": fp16, "trt_profile_min_shapes": shapes(1),
                               "trt_profile_opt_shapes": shapes(max_batch), "trt_profile_max_shapes": shapes(max_batch)}
    if cache is not None:
        options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
    return options


@dataclass
class Model:
    store: ModelStore
    geometry: ort.InferenceSession
    texture: ort.InferenceSession
    providers: list[str] = field(default_factory=list)
    float_graphs: bool = False  # an int8 store's graphs run in float32 (service.engine.float_graph)

    @classmethod
    def load(cls, root: Path, name: str | None, version: str | None, providers: list[str], threads: int,
             trt_cache: Path | None = None, trt_fp16: bool = True, max_batch: int = 8,
             float_graphs: bool = False) -> "Model":
        store = load_model_store(find_model_store(root, name, version))
        sessions = {}
        for part in ("geometry", "texture"):
            trt = tensorrt_options(store.manifest["onnx"][part]["inputs"], max_batch, trt_cache, trt_fp16)
            graph = float_graph(store.onnx_path(part)) if float_graphs else str(store.onnx_path(part))
            sessions[part] = ort.InferenceSession(graph, sess_options=session_options(threads),
                                                  providers=provider_list(providers, trt))
        # onnxruntime silently falls back to CPU when a provider fails to initialise; say so instead.
        loaded = sessions["geometry"].get_providers()
        if loaded[0] != providers[0]:
            raise ModelStoreError(f"asked for providers {providers}, onnxruntime loaded {loaded}")
        return cls(store, sessions["geometry"], sessions["texture"], loaded, float_graphs)

    @classmethod
    def from_settings(cls, s: Settings) -> "Model":
        return cls.load(s.model_store, s.model_name, s.model_version, s.providers, s.intra_op_threads,
                        s.tensorrt_cache_dir, s.tensorrt_fp16, s.max_batch_size, s.runs_float_graphs)

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def version(self) -> str:
        return self.store.version

    @cached_property
    def geometry_outputs(self) -> tuple[str, ...]:
        """What ``run_geometry`` returns, in order: ``GEOMETRY_OUTPUTS``, then the ``COEFFICIENT_OUTPUTS``
        this graph has (read once from the manifest: every request asks)."""
        names = {o["name"] for o in self.store.onnx_outputs("geometry")}
        return GEOMETRY_OUTPUTS + tuple(n for n in COEFFICIENT_OUTPUTS if n in names)

    def run_geometry(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.geometry.run(list(self.geometry_outputs), feeds)

    def run_texture(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.texture.run(["albedo"], feeds)
