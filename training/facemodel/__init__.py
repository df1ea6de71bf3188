"""ICT-FaceKit as a morphable model in UV space (the Attribute Spatial Maps' domain)."""

from .facekit import N_EXPRESSION, N_IDENTITY, FaceKit, blend, facekit_path
from .frame import CanonicalFrame
from .model import UVFaceModel
from .region import FaceRegion
from .sampling import UVSampler
from .topology import REGION_NAMES, Topology, build_topology, grid_triangles, mirror_map
from .uvmap import UVLayout, pixel_to_uv, rasterize_uv, uv_to_pixel

__all__ = [
    "N_EXPRESSION", "N_IDENTITY", "FaceKit", "blend", "facekit_path", "CanonicalFrame",
    "UVFaceModel", "FaceRegion", "UVSampler", "REGION_NAMES", "Topology", "build_topology",
    "grid_triangles", "mirror_map", "UVLayout", "pixel_to_uv", "rasterize_uv", "uv_to_pixel",
]
