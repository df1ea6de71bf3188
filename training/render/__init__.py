"""A differentiable mesh rasterizer in pure PyTorch (CPU and CUDA, batched).

Conventions:

* World / view frame: x right, y up, z towards the camera.
* Screen: x right, y DOWN, in pixels; pixel (row i, col j) is sampled at (j + 0.5, i + 0.5);
  depth smaller = closer.
* Images are channels-last (B, H, W, C); ``RenderOutput.image_nchw()`` gives (B, C, H, W).
* UVs: u right, v UP, (0, 0) = bottom-left corner of the texture image (OBJ convention).
* Faces are counter-clockwise seen from outside; both windings rasterize unless culling is on.

Pipeline: camera (``cameras``) -> visibility pass + differentiable barycentrics (``rasterize``)
-> attributes (``interpolate``, ``texture``) -> SH Lambertian shading (``shading``), composed by
``render_mesh`` / ``MeshRenderer`` (``renderer``). ``reference`` holds slow loop-based twins
for testing.
"""

from .cameras import (
    PerspectiveCamera,
    WeakPerspectiveCamera,
    euler_to_rotation,
    perspective_project,
    weak_perspective_project,
)
from .interpolate import interpolate_face_attributes, interpolate_vertex_attributes
from .rasterize import Fragments, compute_barycentrics, rasterize, rasterize_pix_to_face
from .renderer import MeshRasterizer, MeshRenderer, RenderOutput, RenderSettings, render_mesh
from .shading import face_normals, sh_basis, sh_shading, vertex_normals
from .texture import TexturesUV, interpolate_uv, sample_texture

__all__ = [
    "Fragments",
    "MeshRasterizer",
    "MeshRenderer",
    "PerspectiveCamera",
    "RenderOutput",
    "RenderSettings",
    "TexturesUV",
    "WeakPerspectiveCamera",
    "compute_barycentrics",
    "euler_to_rotation",
    "face_normals",
    "interpolate_face_attributes",
    "interpolate_uv",
    "interpolate_vertex_attributes",
    "perspective_project",
    "rasterize",
    "rasterize_pix_to_face",
    "render_mesh",
    "sample_texture",
    "sh_basis",
    "sh_shading",
    "vertex_normals",
    "weak_perspective_project",
]
