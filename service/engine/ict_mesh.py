"""The output mesh in ICT-FaceKit's topology: the face region's own vertices, triangles and UVs, and the eyeballs.

The S x S maps are a raster of ICT's tile-0 UV layout (pixel (r, c) at u = (c + 0.5) / S, v = 1 - (r
+ 0.5) / S), so a texture in the layout is a texture in ICT's UV space: ICT's texture coordinates
index it unchanged. Positions are ICT's linear model at the face's coefficients plus the maps'
residual where they differ from it (``HeadFit.joined_cm``: zero for a model whose maps are ICT's
model), in the frame of the grid mesh (``fuse``): metres, origin at the canonical centre. The
eyeballs are ICT's, placed by the identity (``HeadFit.model_cm``) and moved rigidly with the residual
around them; they close the eye openings that the region leaves.

``region=head`` outputs ICT's head instead of the face region: the same vertices and triangles where
the region is, and around it ICT's model at the same coefficients, the residual fading out over
``head.SPREAD_CM`` along the mesh (so no step at the rim), the ears, neck, back of the head, the
mouth and eye sockets, the teeth, gums and tongue; what the photo cannot show is painted skin colour,
the sockets, teeth and gums flat palette colours (``head_texture``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .head import Coefficients, HeadAssetError, HeadFit
from .ict_decode import RegionDecoder
from .morph import TargetSet

REGIONS = ("face", "head")


@dataclass(frozen=True, eq=False)
class IctMeshes:
    """The face and eyeball meshes of one model store (Vf face, Ve eyeball output vertices)."""

    fit: HeadFit
    metres_per_unit: float  # the manifest's: ICT's centimetres (the model's units) -> metres

    def __post_init__(self):
        head = self.fit.head
        if not np.isin(np.r_[head.face.ids, head.head.ids], head.basis_vertices).all():
            raise HeadAssetError("the head asset's face mesh uses ICT vertices it holds no bases for "
                                 "(rewrite it with python -m training.facemodel.head_asset)")
        self.decoders  # cut at load (the service builds IctMeshes at startup), not on the first request

    @cached_property
    def decoders(self) -> dict[str, RegionDecoder]:
        """Each region's decode, restricted to the vertices it outputs (``ict_decode``)."""
        head = self.fit.head
        return {region: RegionDecoder.build(self.fit, (head.head if region == "head" else head.face).ids,
                                            head.eyes.ids) for region in REGIONS}

    def positions(self, kind: str, a_full: np.ndarray, a_id: np.ndarray, coefficients: Coefficients,
                  region: str = "face") -> tuple[np.ndarray, np.ndarray]:
        """The face (Vf, 3) (or, for ``region`` "head", the head (Vh, 3)) and the eyeballs (Ve, 3), float32
        metres, for the mesh ``kind``: ``full`` = the maps
        A = A_id + A_exp; ``identity`` = A_id over ICT's identity (weights 0); ``expression`` = the
        identity mesh moved by ICT's expressions at the fitted weights (an ARKit rig at the reported
        weights). ``a_full``, ``a_id``: (3, S, S) canonical maps."""
        decoder = self.decoders["head" if region == "head" else "face"]
        outer, eyes = decoder.decode_cm(kind, a_full, a_id, coefficients)
        center, scale = self.fit.center, self.metres_per_unit
        return ((outer - center) * scale).astype(np.float32), ((eyes - center) * scale).astype(np.float32)

    @cached_property
    def face_targets(self) -> TargetSet:
        """ICT's 53 expressions at the face mesh's vertices, as glTF morph targets in metres (encoded once)."""
        return self._targets(self.fit.head.face.ids)

    @cached_property
    def head_targets(self) -> TargetSet:
        """The same at the head mesh's vertices (``region=head``)."""
        return self._targets(self.fit.head.head.ids)

    def targets(self, region: str) -> TargetSet:
        return self.head_targets if region == "head" else self.face_targets

    def _targets(self, ids: np.ndarray) -> TargetSet:
        head = self.fit.head
        columns = np.searchsorted(head.basis_vertices, ids)
        return TargetSet.from_deltas(head.expression[:, columns] * self.metres_per_unit, head.expression_names)
