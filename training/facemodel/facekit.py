"""The ICT-FaceKit morphable model, loaded from the packed ``ict_facekit.npz``.

ICT-FaceKit (MIT, (c) 2020 USC Institute for Creative Technologies) stores a neutral head in
centimetres and *deltas* from it: 100 identity components and 53 ARKit-named expression
blendshapes. A face is ``neutral + id_coeffs @ identity + exp_weights @ expression``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FACEKIT_PATH = REPO_ROOT.parent / "shared" / "assets" / "ict-facekit" / "ict_facekit.npz"

N_IDENTITY = 100
N_EXPRESSION = 53


def facekit_path() -> Path:
    """Where the packed model lives: ``$FACEKIT_PATH`` or ``../shared/assets/ict-facekit/``."""
    return Path(os.environ.get("FACEKIT_PATH", DEFAULT_FACEKIT_PATH))


@dataclass(frozen=True, eq=False)
class FaceKit:
    """The whole ICT head model.

    Attributes (N = 26719 vertices, U = 28911 texture coordinates, T = 52220 triangles):
        neutral: (N, 3) float32, cm; x right, y up, z towards the viewer.
        identity: (100, N, 3) float32 deltas.
        expression: (53, N, 3) float32 deltas.
        expression_names: 53 ARKit blendshape names, in the order of ``expression``.
        uv: (U, 2) float32 texture coordinates (UDIM tiles; the face lies in tile 0, u in [0, 1]).
        triangles: (T, 3) int32 vertex ids; triangles_uv: (T, 3) int32 ids into ``uv``.
        landmarks68: (68,) int32 vertex ids in iBUG-68 order.
        parts: part name -> (first vertex, end vertex) range.
    """

    neutral: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    expression_names: tuple[str, ...]
    uv: np.ndarray
    triangles: np.ndarray
    triangles_uv: np.ndarray
    landmarks68: np.ndarray
    parts: dict[str, tuple[int, int]]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "FaceKit":
        path = Path(path) if path is not None else facekit_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"ICT-FaceKit model not found at {path}; set FACEKIT_PATH to ict_facekit.npz"
            )
        with np.load(path) as d:
            parts = {str(n): (int(a), int(b)) for n, (a, b) in zip(d["part_names"], d["part_ranges"])}
            return cls(
                neutral=d["neutral"].astype(np.float32),
                identity=d["identity"].astype(np.float32),
                expression=d["expression"].astype(np.float32),
                expression_names=tuple(str(s) for s in d["expression_names"]),
                uv=d["uv"].astype(np.float32),
                triangles=d["triangles"].astype(np.int64),
                triangles_uv=d["triangles_uv"].astype(np.int64),
                landmarks68=d["landmarks68"].astype(np.int64),
                parts=parts,
            )

    @property
    def num_vertices(self) -> int:
        return self.neutral.shape[0]

    def vertices(self, id_coeffs: np.ndarray | None = None, exp_weights: np.ndarray | None = None) -> np.ndarray:
        """Decode coefficients into vertex positions.

        Args:
            id_coeffs: (..., 100) identity coefficients (ICT's scale: roughly unit variance), or None.
            exp_weights: (..., 53) blendshape weights, nominally in [0, 1], or None.
        Returns:
            (..., N, 3) float32 positions in cm.
        """
        out = self.neutral
        if id_coeffs is not None:
            out = out + blend(self.identity, np.asarray(id_coeffs, np.float32))
        if exp_weights is not None:
            out = out + blend(self.expression, np.asarray(exp_weights, np.float32))
        return out.astype(np.float32)


def blend(basis, coeffs):
    """``sum_k coeffs[..., k] * basis[k]`` for numpy arrays or torch tensors alike.

    Args:
        basis: (K, N, C); coeffs: (..., K).
    Returns:
        (..., N, C).
    """
    k, n, c = basis.shape
    flat = coeffs.reshape(-1, k) @ basis.reshape(k, n * c)
    return flat.reshape(*coeffs.shape[:-1], n, c)
