"""UV texture lookup.

UV convention (OBJ, and glTF after its v flip): u runs right and v runs UP over the texture
image; (u, v) = (0, 0) is the bottom-left CORNER of the image and (1, 1) the top-right corner,
so texel (row r, col c) of an (Ht, Wt) image has its centre at
``u = (c + 0.5) / Wt, v = 1 - (r + 0.5) / Ht``. Sampling is bilinear between texel centres and
clamps to the border texels outside them (``grid_sample(align_corners=False,
padding_mode='border')``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .interpolate import interpolate_face_attributes, interpolate_vertex_attributes


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture lookup.

    Args:
        texture: (B, C, Ht, Wt) image, row 0 at the top.
        uv: (B, H, W, 2) texture coordinates (u right, v up; see the module docstring).

    Returns:
        (B, H, W, C) samples; differentiable w.r.t. ``texture`` and ``uv``.
    """
    # grid_sample's grid is in [-1, 1] with y = -1 at the TOP row, hence the v flip.
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1)
    out = F.grid_sample(texture, grid.to(texture.dtype), mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def interpolate_uv(
    pix_to_face: torch.Tensor,
    bary: torch.Tensor,
    faces: torch.Tensor,
    verts_uvs: torch.Tensor,
    faces_uvs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pixel UVs.

    Args:
        pix_to_face: (B, H, W); bary: (B, H, W, 3); faces: (F, 3) vertex ids.
        verts_uvs: (T, 2) or (B, T, 2) texture coordinates.
        faces_uvs: (F, 3) ids into ``verts_uvs`` per face corner (seams), or None when the UVs
            are per vertex (T = V, indexed by ``faces``).

    Returns:
        (B, H, W, 2), zero on background.
    """
    if faces_uvs is None:
        return interpolate_vertex_attributes(pix_to_face, bary, faces, verts_uvs)
    idx = faces_uvs.long()
    corner = verts_uvs[idx] if verts_uvs.dim() == 2 else verts_uvs[:, idx]
    return interpolate_face_attributes(pix_to_face, bary, corner)


@dataclass
class TexturesUV:
    """A UV-mapped texture.

    Attributes:
        texture: (B, C, Ht, Wt) image (row 0 at the top).
        verts_uvs: (T, 2) or (B, T, 2), u right / v up in [0, 1].
        faces_uvs: (F, 3) per-corner ids into ``verts_uvs``, or None for per-vertex UVs.
    """

    texture: torch.Tensor
    verts_uvs: torch.Tensor
    faces_uvs: torch.Tensor | None = None

    def sample(self, pix_to_face, bary, faces) -> torch.Tensor:
        """(B, H, W, C) texture colours at each pixel; zero on background."""
        uv = interpolate_uv(pix_to_face, bary, faces, self.verts_uvs, self.faces_uvs)
        return sample_texture(self.texture, uv) * (pix_to_face >= 0).unsqueeze(-1)
