"""What the engine derives once from ``topology.npz`` and the manifest, shared by every request."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.model_store import ModelStore

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
    expression_pinv: np.ndarray | None  # (53, 3V): least-squares weights from a flattened (V, 3) delta
    expression_basis: np.ndarray | None  # (53, V, 3)
    blendshape_names: list[str] | None
    center_cm: np.ndarray  # (3,) canonical origin in the model's units
    units_per_canonical: float
    metres_per_unit: float

    @classmethod
    def from_store(cls, store: ModelStore) -> "MeshTopology":
        t, m = store.topology, store.manifest
        rows, cols = t["vertex_pixels"][:, 0].astype(np.intp), t["vertex_pixels"][:, 1].astype(np.intp)
        basis = t.get("expression_basis")
        pinv = None
        if basis is not None and basis.shape == (basis.shape[0], len(rows), 3):
            pinv = np.linalg.pinv(basis.reshape(len(basis), -1).T.astype(np.float64)).astype(np.float32)
        norm = m["normalization"]
        return cls(
            size=store.uv_size, uv_mask=t["uv_mask"], rows=rows, cols=cols, triangles=t["triangles"],
            uv_coords=t["uv_coords"], landmarks_uv=t["landmarks_uv"].astype(np.float64),
            expression_pinv=pinv, expression_basis=basis, blendshape_names=blendshape_names(store, basis),
            center_cm=np.asarray(norm["center"], np.float64), units_per_canonical=float(norm["scale"]),
            metres_per_unit=UNIT_METRES.get(norm.get("units", "cm"), 0.01),
        )

    @property
    def vertices(self) -> int:
        return len(self.rows)


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
