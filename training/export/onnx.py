"""ONNX export of the two streams, with a parity check against PyTorch, and the model-store bundle.

The ONNX graphs are the service's whole view of the network; their input and output names below
are part of the contract (the manifest records them with shapes).

geometry.onnx: image (B, 3, H, W) RGB in [0, 1] -> a_id, a_exp (B, 3, S, S), p_t (B, K),
    p_l (B, 27), p_h (B, 6); a network with a linear basis or the shape from landmarks
    (``GeometryConfig.linear_basis``, ``shape_from_landmarks``) also ->
    id_coeffs (B, 100), ICT identity coefficients, and exp_weights (B, 53), ICT blendshape weights in (0, 1).
texture.onnx: p_t (B, K), image (B, 3, H, W), heatmaps (B, 68, H, W), uv_grid (B, S, S, 2),
    uv_visibility (B, 1, S, S) -> albedo, linear_albedo (B, 3, S, S) in [0, 1].
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from service.engine.albedo_basis import topology_arrays
from training.facemodel import UVFaceModel
from training.models import AlbedoModel, GeometryStream, NetworkConfig, TextureStream
from training.models.pose import camera_manifest

from .half import store_weights_in_half
from .store import write_model_store

OPSET = 17
GEOMETRY_INPUTS = ("image",)
GEOMETRY_OUTPUTS = ("a_id", "a_exp", "p_t", "p_l", "p_h")
COEFFICIENT_OUTPUTS = ("id_coeffs", "exp_weights")  # after GEOMETRY_OUTPUTS, with a linear basis
TEXTURE_INPUTS = ("p_t", "image", "heatmaps", "uv_grid", "uv_visibility")
TEXTURE_OUTPUTS = ("albedo", "linear_albedo")


class _GeometryGraph(nn.Module):
    def __init__(self, net: GeometryStream):
        super().__init__()
        self.net = net

    @property
    def outputs(self) -> tuple[str, ...]:
        return GEOMETRY_OUTPUTS + (COEFFICIENT_OUTPUTS if self.net.cfg.linear_basis or self.net.cfg.shape_from_landmarks else ())

    def forward(self, image):
        out = self.net(image)
        return tuple(getattr(out, name) for name in self.outputs)


class _TextureGraph(nn.Module):
    def __init__(self, net: TextureStream):
        super().__init__()
        self.net = net

    def forward(self, p_t, image, heatmaps, uv_grid, uv_visibility):
        albedo, linear, _ = self.net(p_t, image, heatmaps, uv_grid, uv_visibility)
        return albedo, linear


def example_inputs(cfg: NetworkConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded inputs of the right shapes for both graphs (texture's p_t included)."""
    g = torch.Generator().manual_seed(seed)
    h, s, t = cfg.geometry.image_size, cfg.geometry.uv_size, cfg.texture
    return {
        "image": torch.rand(batch, 3, h, h, generator=g),
        "p_t": torch.randn(batch, t.albedo_dim, generator=g),
        "heatmaps": torch.rand(batch, t.landmarks, h, h, generator=g),
        "uv_grid": torch.rand(batch, s, s, 2, generator=g) * 2 - 1,
        "uv_visibility": (torch.rand(batch, 1, s, s, generator=g) > 0.3).float(),
    }


def _export(graph: nn.Module, inputs: dict[str, torch.Tensor], names_in, names_out, path: Path) -> None:
    graph = graph.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            graph, tuple(inputs[n] for n in names_in), str(path), input_names=list(names_in),
            output_names=list(names_out), dynamic_axes={n: {0: "batch"} for n in (*names_in, *names_out)},
            opset_version=OPSET, dynamo=False,
        )
    graph.net.eval()  # the exporter restores the wrapper's mode onto the wrapped net


def export_geometry(net: GeometryStream, path: Path, inputs: dict[str, torch.Tensor]) -> None:
    graph = _GeometryGraph(net)
    _export(graph, inputs, GEOMETRY_INPUTS, graph.outputs, path)


def export_texture(net: TextureStream, path: Path, inputs: dict[str, torch.Tensor]) -> None:
    _export(_TextureGraph(net), inputs, TEXTURE_INPUTS, TEXTURE_OUTPUTS, path)


def parity(path: Path | bytes, graph: nn.Module, inputs: dict[str, torch.Tensor], names_in) -> float:
    """Max abs difference between onnxruntime and PyTorch on the same inputs (``path``: an ONNX file or its bytes)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path if isinstance(path, bytes) else str(path), providers=["CPUExecutionProvider"])
    feed = {n: inputs[n].numpy() for n in names_in}
    got = session.run(None, feed)
    with torch.no_grad():
        want = graph.eval()(*(inputs[n] for n in names_in))
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))


@dataclass
class ExportReport:
    folder: Path
    geometry_parity: float
    texture_parity: float


def albedo_fit_arrays(albedo: AlbedoModel, uv_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The texture stream's linear albedo model at a subset of the ``uv_mask`` vertices (``topology.npz``'s
    ``albedo_fit_*``), for the service to fit p_t to the photo (``service.engine.albedo_fit``)."""
    return topology_arrays(albedo.mean.cpu().numpy(), albedo.basis.cpu().numpy(), albedo.std.cpu().numpy(), uv_mask)


def export_model_store(
    geometry: GeometryStream,
    texture: TextureStream,
    cfg: NetworkConfig,
    root: str | Path,
    name: str,
    version: str,
    *,
    face_model: UVFaceModel | None = None,
    inputs: dict[str, torch.Tensor] | None = None,
    evaluation: dict | None = None,
    overwrite: bool = False,
    half_weights: bool = False,
) -> ExportReport:
    """Export both streams, check parity on ``inputs`` (seeded ones by default), write the store.
    ``half_weights``: the graphs' large weights stored in float16 (``half.store_weights_in_half``), the
    parity then measured on the stored graphs."""
    geometry.eval()
    texture.eval()
    face_model = face_model or UVFaceModel.build(cfg.geometry.uv_size)
    if face_model.size != cfg.geometry.uv_size:
        raise ValueError(f"face model S = {face_model.size}, network S = {cfg.geometry.uv_size}")
    inputs = inputs or example_inputs(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        geo_path, tex_path = Path(tmp) / "geometry.onnx", Path(tmp) / "texture.onnx"
        export_geometry(geometry, geo_path, inputs)
        export_texture(texture, tex_path, inputs)
        if half_weights:
            store_weights_in_half(geo_path), store_weights_in_half(tex_path)
        geo_diff = parity(geo_path, _GeometryGraph(geometry), inputs, GEOMETRY_INPUTS)
        tex_diff = parity(tex_path, _TextureGraph(texture), inputs, TEXTURE_INPUTS)
        folder = write_model_store(
            root, name, version,
            config=cfg.as_dict(),
            input_size=cfg.geometry.image_size,
            uv_size=cfg.geometry.uv_size,
            normalization=face_model.frame.as_dict(),
            camera=camera_manifest(),
            onnx_files={"geometry": geo_path, "texture": tex_path},
            topology=face_model.topology.to_npz_dict() | albedo_fit_arrays(texture.albedo, face_model.topology.uv_mask),
            evaluation={"onnx_parity_max_abs": {"geometry": geo_diff, "texture": tex_diff}, **(evaluation or {})},
            overwrite=overwrite,
        )
    return ExportReport(folder, geo_diff, tex_diff)
