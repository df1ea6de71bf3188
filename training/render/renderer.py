"""The full mesh renderer: camera -> rasterize -> albedo -> SH shading -> composite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .cameras import PerspectiveCamera, WeakPerspectiveCamera, as_hw
from .interpolate import interpolate_vertex_attributes
from .rasterize import rasterize
from .shading import sh_shading, vertex_normals
from .texture import TexturesUV


@dataclass
class RenderSettings:
    """Renderer options.

    Attributes:
        image_size: int or (H, W) of the output; must match the camera's image_size.
        cull_backfaces: skip triangles facing away from the camera (clockwise on screen as
            seen by the viewer). Off by default: both windings render.
        background: value of uncovered pixels, a float or one per channel.
        perspective_correct: for :class:`PerspectiveCamera`, interpolate attributes linearly in
            3D rather than on screen (ignored by the weak-perspective camera).
        max_candidates: memory bound of the rasterizer, in (triangle, pixel) pairs per chunk.
    """

    image_size: int | tuple[int, int] = 224
    cull_backfaces: bool = False
    background: float | Sequence[float] = 0.0
    perspective_correct: bool = True
    max_candidates: int = 1 << 22


@dataclass
class RenderOutput:
    """What :func:`render_mesh` returns. Images are channels-last (B, H, W, C).

    Attributes:
        image: (B, H, W, C) shaded colour, ``background`` where not covered.
        mask: (B, H, W) bool, True where the mesh covers the pixel (face/visibility mask).
        pix_to_face: (B, H, W) int64 visible face id, -1 = background.
        bary: (B, H, W, 3) barycentrics of the visible face, zero on background.
        depth: (B, H, W) depth (smaller = closer), zero on background.
        normals: (B, H, W, 3) unit view-frame normals if shading was applied, else None.
    """

    image: torch.Tensor
    mask: torch.Tensor
    pix_to_face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor | None = None

    def image_nchw(self) -> torch.Tensor:
        """The image as (B, C, H, W)."""
        return self.image.permute(0, 3, 1, 2)


Camera = WeakPerspectiveCamera | PerspectiveCamera


def render_mesh(
    verts: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    settings: RenderSettings | None = None,
    vertex_colors: torch.Tensor | None = None,
    texture: TexturesUV | None = None,
    sh_coeffs: torch.Tensor | None = None,
) -> RenderOutput:
    """Render a batch of meshes sharing one topology.

    Args:
        verts: (B, V, 3) world vertices (x right, y up, z towards the camera).
        faces: (F, 3) int64, counter-clockwise seen from outside (so normals point out).
        camera: a batched camera (see ``cameras.py``).
        settings: :class:`RenderSettings`; defaults if None.
        vertex_colors: (V, C) or (B, V, C) albedo per vertex.
        texture: :class:`TexturesUV` albedo; takes precedence over ``vertex_colors``.
        sh_coeffs: (B, 9, C) SH lighting; None renders the albedo unlit.

    Albedo defaults to white (C = 3, or the channel count of ``sh_coeffs``).

    Returns:
        :class:`RenderOutput`; ``image`` is differentiable w.r.t. ``verts`` (through the
        barycentrics and normals, not the silhouette), albedo, texture and lighting.
    """
    settings = settings or RenderSettings()
    size = as_hw(settings.image_size)
    if as_hw(camera.image_size) != size:
        raise ValueError(f"camera image_size {camera.image_size} != settings {size}")

    screen = camera.transform_points_screen(verts)
    frags = rasterize(
        screen,
        faces,
        size,
        cull_backfaces=settings.cull_backfaces,
        perspective_correct=settings.perspective_correct and camera.is_perspective,
        max_candidates=settings.max_candidates,
    )
    p2f, bary = frags.pix_to_face, frags.bary_coords
    mask = p2f >= 0
    maskf = mask.unsqueeze(-1).to(verts.dtype)

    if texture is not None:
        albedo = texture.sample(p2f, bary, faces)
    elif vertex_colors is not None:
        albedo = interpolate_vertex_attributes(p2f, bary, faces, vertex_colors)
    else:
        channels = sh_coeffs.shape[-1] if sh_coeffs is not None else 3
        albedo = maskf.expand(*maskf.shape[:-1], channels)

    normals = None
    colour = albedo
    if sh_coeffs is not None:
        vn = vertex_normals(camera.to_view(verts), faces)
        pn = interpolate_vertex_attributes(p2f, bary, faces, vn)
        # Interpolated unit normals are shorter than 1 inside a face; renormalise (Phong).
        # The clamp keeps background pixels (zero normals) finite.
        normals = pn / pn.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        colour = albedo * sh_shading(normals, sh_coeffs)

    bg = torch.as_tensor(settings.background, dtype=colour.dtype, device=colour.device)
    image = colour * maskf + bg * (1 - maskf)
    return RenderOutput(image, mask, p2f, bary, frags.zbuf, normals)


class MeshRenderer(nn.Module):
    """``nn.Module`` wrapper around :func:`render_mesh` holding a :class:`RenderSettings`."""

    def __init__(self, settings: RenderSettings | None = None):
        super().__init__()
        self.settings = settings or RenderSettings()

    def forward(
        self,
        verts: torch.Tensor,
        faces: torch.Tensor,
        camera: Camera,
        vertex_colors: torch.Tensor | None = None,
        texture: TexturesUV | None = None,
        sh_coeffs: torch.Tensor | None = None,
    ) -> RenderOutput:
        """See :func:`render_mesh`."""
        return render_mesh(verts, faces, camera, self.settings, vertex_colors, texture, sh_coeffs)


class MeshRasterizer(nn.Module):
    """``nn.Module`` wrapper: world vertices + camera -> :class:`~.rasterize.Fragments`."""

    def __init__(self, settings: RenderSettings | None = None):
        super().__init__()
        self.settings = settings or RenderSettings()

    def forward(self, verts: torch.Tensor, faces: torch.Tensor, camera: Camera):
        """(B, V, 3) world verts, (F, 3) faces -> Fragments of size settings.image_size."""
        s = self.settings
        return rasterize(
            camera.transform_points_screen(verts),
            faces,
            as_hw(s.image_size),
            cull_backfaces=s.cull_backfaces,
            perspective_correct=s.perspective_correct and camera.is_perspective,
            max_candidates=s.max_candidates,
        )
