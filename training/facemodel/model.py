"""ICT-FaceKit seen through the S x S UV layout: coefficients -> Attribute Spatial Maps."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .facekit import FaceKit
from .frame import CanonicalFrame
from .region import FaceRegion
from .topology import Topology, build_topology
from .uvmap import UVLayout


@dataclass(frozen=True, eq=False)
class UVFaceModel:
    """The face model at one UV resolution.

    ``A_id`` is the identity's neutral face and ``A_exp`` the expression's displacement, both as
    (S, S, 3) maps in canonical units; the full face is ``A = A_id + A_exp`` (the paper's Eq. 2).
    """

    kit: FaceKit
    region: FaceRegion
    frame: CanonicalFrame
    layout: UVLayout

    @classmethod
    def build(cls, size: int = 128, kit: FaceKit | None = None) -> "UVFaceModel":
        kit = kit if kit is not None else FaceKit.load()
        region = FaceRegion.build(kit)
        frame = CanonicalFrame.fit(kit.neutral[region.vertex_ids])
        layout = UVLayout.build(region.triangles, region.tri_uv, size)
        return cls(kit, region, frame, layout)

    @property
    def size(self) -> int:
        return self.layout.size

    @cached_property
    def topology(self) -> Topology:
        return build_topology(self.kit, self.region, self.layout, self.frame)

    def identity_map(self, id_coeffs: np.ndarray | None = None) -> np.ndarray:
        """(..., 100) identity coefficients -> (..., S, S, 3) ``A_id``, zero outside the mask."""
        cm = self.kit.vertices(id_coeffs=id_coeffs)
        return self.layout.to_map(self.frame.to_canonical(cm))

    def expression_map(self, exp_weights: np.ndarray) -> np.ndarray:
        """(..., 53) blendshape weights -> (..., S, S, 3) ``A_exp`` (a displacement: no centring)."""
        delta = self.kit.vertices(exp_weights=exp_weights) - self.kit.neutral
        return self.layout.to_map(delta / np.float32(self.frame.scale))

    def pixel_basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ICT's linear model at the layout's P valid pixels, in canonical units: the neutral mean
        (P, 3), the identity basis (100, P, 3) and the expression basis (53, P, 3), so that
        ``identity_map(c)`` at the valid pixels is ``mean + blend(identity, c)`` and ``expression_map(w)``
        is ``blend(expression, w)``."""
        scale = np.float32(self.frame.scale)
        mean = self.layout.to_pixels(self.frame.to_canonical(self.kit.neutral))
        identity = self.layout.to_pixels(self.kit.identity / scale)
        expression = self.layout.to_pixels(self.kit.expression / scale)
        return mean.astype(np.float32), identity.astype(np.float32), expression.astype(np.float32)

    def to_mesh_vertices(self, uv_map: np.ndarray) -> np.ndarray:
        """(..., S, S, 3) map -> (..., V, 3) the values at the topology's mesh vertices."""
        rows, cols = self.layout.pixels[:, 0], self.layout.pixels[:, 1]
        return uv_map[..., rows, cols, :]
