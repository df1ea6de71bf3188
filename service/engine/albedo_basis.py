"""texture.onnx's linear albedo model at a subset of the mesh's vertices, as a store's ``topology.npz``
carries it for the albedo fit (``albedo_fit``): what the engine needs of it, read and checked once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

STRIDE = 6  # every sixth vertex: ~1,800 colours at S = 128 for K = 80 coefficients, a sixth of the fit's time
TOPOLOGY_KEYS = ("albedo_fit_vertices", "albedo_fit_mean", "albedo_fit_components")


@dataclass(frozen=True, eq=False)
class AlbedoBasis:
    """texture.onnx's linear albedo model at M of the mesh's vertices (a fixed subset: a few thousand
    colours pin down K coefficients): colour = mean + p_t @ components, p_t in stds.

    vertices: (M,) indices into the mesh's V vertices; mean: (M, 3) float64; components: (K, M, 3) float64,
    each component scaled by its std."""

    vertices: np.ndarray
    mean: np.ndarray
    components: np.ndarray

    @property
    def size(self) -> int:
        return self.components.shape[0]

    @cached_property
    def by_channel(self) -> np.ndarray:
        """(3, K, M) float32: the components a colour channel at a time, as the fit reads them."""
        return np.ascontiguousarray(self.components.transpose(2, 0, 1), dtype=np.float32)

    @classmethod
    def from_topology(cls, topology: dict[str, np.ndarray], n_vertices: int) -> "AlbedoBasis | None":
        """The basis a store's ``topology.npz`` carries (``TOPOLOGY_KEYS``), None when it has none;
        ValueError when the arrays disagree in shape or index outside the V vertices."""
        present = [key for key in TOPOLOGY_KEYS if key in topology]
        if not present:
            return None
        if len(present) < len(TOPOLOGY_KEYS):
            raise ValueError(f"topology.npz: {', '.join(sorted(set(TOPOLOGY_KEYS) - set(present)))} missing beside {', '.join(present)}")
        vertices, mean, components = (topology[key] for key in TOPOLOGY_KEYS)
        m = len(vertices)
        if mean.shape != (m, 3) or components.ndim != 3 or components.shape[1:] != (m, 3):
            raise ValueError(f"topology.npz: albedo_fit_mean {mean.shape} and albedo_fit_components {components.shape} "
                             f"do not fit albedo_fit_vertices ({m},): expected (M, 3) and (K, M, 3)")
        if m == 0 or vertices.min() < 0 or vertices.max() >= n_vertices:
            raise ValueError(f"topology.npz: albedo_fit_vertices must index the {n_vertices} vertices")
        return cls(vertices=vertices.astype(np.intp), mean=mean.astype(np.float64),
                   components=components.astype(np.float64))


def topology_arrays(mean: np.ndarray, basis: np.ndarray, std: np.ndarray, uv_mask: np.ndarray,
                    stride: int = STRIDE) -> dict[str, np.ndarray]:
    """An albedo model's ``TOPOLOGY_KEYS`` for a store: mean (3, S, S), basis (K, 3, S, S) and std (K,)
    (``python -m training.albedo``'s arrays, texture.onnx's constants) read at every ``stride``-th of the
    ``uv_mask`` vertices, in float16 (colours, whose float16 step is below a 0-255 level)."""
    vertices = np.arange(0, int(uv_mask.sum()), stride)
    rows, cols = np.nonzero(uv_mask)  # row-major: the vertex order (model_store/README.md)
    rows, cols = rows[vertices], cols[vertices]
    return {"albedo_fit_vertices": vertices.astype(np.int32),
            "albedo_fit_mean": mean[:, rows, cols].T.astype(np.float16),
            "albedo_fit_components": (basis[:, :, rows, cols] * std[:, None, None]).transpose(0, 2, 1).astype(np.float16)}
