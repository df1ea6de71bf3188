"""The canonical head frame in which the Attribute Spatial Maps live.

Positions are ICT centimetres mapped by ``canonical = (cm - center) / scale``: x right, y up, z
towards the camera, the region's neutral bounding box centred on the origin and its largest
half-extent at ``1 / MARGIN``, so identities and expressions stay inside the decoders' tanh
range (-1, 1). ``center`` has x = 0 because ICT is left-right symmetric about x = 0; that keeps
the mirror relation ``A_id(mirror(p)) = A_id(p) * (-1, 1, 1)`` exact in canonical units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARGIN = 1.6  # neutral half-extent -> 1 / 1.6 = 0.625: room for +-3 sigma identities and jawOpen


@dataclass(frozen=True)
class CanonicalFrame:
    """center: (3,) cm; scale: cm per canonical unit."""

    center: tuple[float, float, float]
    scale: float

    @classmethod
    def fit(cls, neutral_region: np.ndarray) -> "CanonicalFrame":
        """neutral_region: (N, 3) the region's neutral vertices in cm."""
        lo, hi = neutral_region.min(0), neutral_region.max(0)
        center = (lo + hi) / 2.0
        center[0] = 0.0
        half = float(np.max(np.maximum(hi - center, center - lo)))
        return cls(center=tuple(round(float(c), 6) for c in center), scale=round(half * MARGIN, 6))

    def to_canonical(self, cm: np.ndarray) -> np.ndarray:
        """(..., 3) cm -> (..., 3) canonical units."""
        return (cm - np.asarray(self.center, np.float32)) / np.float32(self.scale)

    def to_cm(self, canonical: np.ndarray) -> np.ndarray:
        """(..., 3) canonical units -> (..., 3) cm."""
        return canonical * np.float32(self.scale) + np.asarray(self.center, np.float32)

    def as_dict(self) -> dict:
        """The manifest's ``normalization`` entry."""
        return {"center": list(self.center), "scale": self.scale, "units": "cm"}
