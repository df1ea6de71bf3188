"""What the engine derives once from ``topology.npz`` and the manifest, shared by every request."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import sparse

from service.model_store import ModelStore, ModelStoreError

from .albedo_basis import AlbedoBasis
from .head import HEAD_ASSET_PATH, HeadFit, HeadModel
from .ict_mesh import IctMeshes
from .morph import TargetSet

N_BLENDSHAPES = 53


@dataclass(frozen=True, eq=False)
class MeshTopology:
    size: int  # S
    uv_mask: np.ndarray  # (S, S) bool
    rows: np.ndarray  # (V,) vertex pixel rows
    cols: np.ndarray  # (V,)
    triangles: np.ndarray  # (F, 3) int32, counter-clockwise seen from the front
    uv_coords: np.ndarray  # (V, 2) float32, v up
    landmarks_uv: np.ndarray  # (68, 2) (x = col, y = row), pixel centres at integers
    expression_basis: np.ndarray | None  # (53, V, 3)
    blendshape_names: list[str] | None
    center_cm: np.ndarray  # (3,) canonical origin in the model's units
    units_per_canonical: float
    metres_per_unit: float
    # ICT's head joined to the store's face region; None for a store without ICT taps (``ict_vertex_ids``).
    head: HeadFit | None = None
    # texture.onnx's albedo model at some vertices, for p_t fitted to the photo; None for a store without it.
    albedo_basis: AlbedoBasis | None = None

    @classmethod
    def from_store(cls, store: ModelStore, head_asset: Path = HEAD_ASSET_PATH) -> "MeshTopology":
        t, m = store.topology, store.manifest
        rows, cols = t["vertex_pixels"][:, 0].astype(np.intp), t["vertex_pixels"][:, 1].astype(np.intp)
        basis = t.get("expression_basis")
        norm = m["normalization"]
        head = head_fit(store, head_asset) if "ict_vertex_ids" in t else None
        try:
            albedo_basis = AlbedoBasis.from_topology(t, len(rows))
        except ValueError as error:
            raise ModelStoreError(f"{store.path}: {error}") from None
        if albedo_basis is not None:
            p_t = store.onnx_input("texture", "p_t")["shape"][1]
            if p_t != albedo_basis.size:
                raise ModelStoreError(f"{store.path}: topology.npz's albedo basis has {albedo_basis.size} components; "
                                      f"texture.onnx takes p_t of {p_t}")
        return cls(
            size=store.uv_size, uv_mask=t["uv_mask"], rows=rows, cols=cols, triangles=t["triangles"],
            uv_coords=t["uv_coords"], landmarks_uv=t["landmarks_uv"].astype(np.float64),
            expression_basis=basis, blendshape_names=blendshape_names(store, basis),
            center_cm=np.asarray(norm["center"], np.float64), units_per_canonical=float(norm["scale"]),
            metres_per_unit=UNIT_METRES.get(norm.get("units", "cm"), 0.01), head=head, albedo_basis=albedo_basis,
        )

    @property
    def vertices(self) -> int:
        return len(self.rows)

    @cached_property
    def ict(self) -> IctMeshes | None:
        """The output meshes in ICT's topology; None for a store without ICT taps (it outputs the UV grid)."""
        return None if self.head is None else IctMeshes(self.head, self.metres_per_unit)

    @cached_property
    def corner_sum(self) -> sparse.csr_matrix:
        """(V, F) sparse ones: row v sums the triangles having v as a corner (``unwrap.vertex_normals``)."""
        return corner_sum(self.triangles, len(self.rows))

    @cached_property
    def morph_targets(self) -> TargetSet | None:
        """The expression basis as glTF morph targets in the output mesh's metres, encoded once."""
        if self.expression_basis is None or self.blendshape_names is None:
            return None
        return TargetSet.from_deltas(self.expression_basis * (self.units_per_canonical * self.metres_per_unit),
                                     self.blendshape_names)


_HEAD_FITS: dict[tuple, HeadFit] = {}


def head_fit(store: ModelStore, head_asset: Path) -> HeadFit:
    """The store's ``HeadFit``, built once per process and store (a few seconds: the fit's normal equations)."""
    key = (str(store.path), store.manifest["files"]["topology.npz"]["sha256"], str(head_asset))
    if key not in _HEAD_FITS:
        norm = store.manifest["normalization"]
        _HEAD_FITS[key] = HeadFit.build(HeadModel.load(head_asset), store.topology, store.uv_size, norm["center"],
                                        float(norm["scale"]))
    return _HEAD_FITS[key]


UNIT_METRES = {"m": 1.0, "cm": 0.01, "mm": 0.001}


def blendshape_names(store: ModelStore, basis: np.ndarray | None) -> list[str] | None:
    """The expression basis's names if the store carries them (topology key or config entry), else None."""
    if basis is None:
        return None
    candidates = [store.topology.get("expression_names"), store.manifest["config"].get("expression_names"),
                  store.manifest["config"].get("blendshape_names")]
    for names in candidates:
        if names is not None and len(names) == len(basis):
            return [str(n) for n in names]
    return None


def corner_sum(triangles: np.ndarray, n_vertices: int) -> sparse.csr_matrix:
    """(V, F) sparse ones at (v, f) for each corner v of triangle f of ``triangles`` (F, 3)."""
    faces = np.repeat(np.arange(len(triangles)), 3)
    return sparse.csr_matrix((np.ones(triangles.size), (triangles.reshape(-1), faces)),
                             shape=(n_vertices, len(triangles)))
