"""Fitted coefficients -> Attribute Spatial Maps, and a photo unwrapped into UV with visibility.

The surface used for both is the UV map's own mesh (``Topology``: one vertex per valid UV pixel,
grid triangles), so a UV pixel's 3D point is exactly ``A_id + A_exp`` at that pixel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from training.facemodel import UVFaceModel
from training.render import WeakPerspectiveCamera, euler_to_rotation, rasterize, vertex_normals

# Depth slack for the z-buffer test, canonical units (~5 mm): a UV point and the depth interpolated
# at its pixel's centre differ by up to half a pixel times the surface slope.
DEPTH_TOLERANCE = 0.03


def pose_camera(pose: np.ndarray, image_size: tuple[int, int]) -> WeakPerspectiveCamera:
    """(6,) ``(yaw, pitch, roll, tx, ty, scale)`` (see ``fitter``) and (H, W) -> a batch-of-1 camera."""
    p = torch.as_tensor(np.asarray(pose, np.float32))
    rotation = euler_to_rotation(p[None, 0], p[None, 1], p[None, 2])
    return WeakPerspectiveCamera(rotation, p[None, 5], p[None, 3:5], (int(image_size[0]), int(image_size[1])))


class UVUnwrapper:
    """Per-pixel model bases of one UV resolution S (P valid pixels).

    Attributes:
        mean: (P, 3) float32 the neutral face; id_basis: (100, P, 3); exp_basis: (53, P, 3), all in
            canonical units at the valid UV pixels (row-major, ``layout.pixels`` order).
        faces: (F, 3) int64 the grid triangles over those pixels, counter-clockwise from the front.
    """

    def __init__(self, model: UVFaceModel):
        kit, frame, layout = model.kit, model.frame, model.layout
        self.size, self.layout = model.size, layout
        scale = np.float32(frame.scale)
        self.mean = torch.from_numpy(layout.to_pixels(frame.to_canonical(kit.neutral)).astype(np.float32))
        self.id_basis = torch.from_numpy((layout.to_pixels(kit.identity) / scale).astype(np.float32))
        self.exp_basis = torch.from_numpy(model.topology.expression_basis)
        self.faces = torch.from_numpy(model.topology.triangles).long()

    def pixel_points(self, id_coeffs: np.ndarray, exp_weights: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 100), (B, 53) -> A_id and A_exp at the valid pixels, each (B, P, 3) float32."""
        c = torch.as_tensor(np.asarray(id_coeffs, np.float32))
        e = torch.as_tensor(np.asarray(exp_weights, np.float32))
        a_id = self.mean + torch.einsum("bk,kpc->bpc", c, self.id_basis)
        a_exp = torch.einsum("bk,kpc->bpc", e, self.exp_basis)
        return a_id, a_exp

    def to_map(self, values: torch.Tensor | np.ndarray, fill=0) -> np.ndarray:
        """(B, P, C) per-pixel values -> (B, S, S, C) maps, ``fill`` outside the mask."""
        values = np.asarray(values)
        out = np.full((values.shape[0], self.size * self.size, values.shape[-1]), fill, values.dtype)
        out[:, self.layout.flat_index] = values
        return out.reshape(values.shape[0], self.size, self.size, values.shape[-1])

    def unwrap(self, photo: np.ndarray, points: torch.Tensor, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample a photo at the projection of every valid UV pixel's surface point.

        Args:
            photo: (H, W, 3) uint8 RGB.
            points: (P, 3) the fitted surface ``A_id + A_exp`` at the valid pixels, canonical units.
            pose: (6,) the fitted pose (``fitter`` module docstring).
        Returns:
            texture: (S, S, 3) uint8, bilinear samples where visible, 0 elsewhere.
            visible: (S, S) bool: inside the UV mask, projecting inside the photo, front-facing
                (view-frame normal towards the camera), not hidden (its depth within
                ``DEPTH_TOLERANCE`` of the z-buffer of the rendered fitted surface at its pixel),
                and with its 2 x 2 bilinear footprint covered by the rendered surface.
        """
        h, w = photo.shape[:2]
        camera = pose_camera(pose, (h, w))
        verts = points[None].float()
        screen = camera.transform_points_screen(verts)  # (1, P, 3)
        frags = rasterize(screen, self.faces, (h, w))
        normals = vertex_normals(camera.to_view(verts), self.faces)
        x, y, depth = screen[0].unbind(-1)
        col, row = x.floor().long(), y.floor().long()
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        col, row = col.clamp(0, w - 1), row.clamp(0, h - 1)
        covered = frags.pix_to_face[0, row, col] >= 0
        # The bilinear footprint (the 2 x 2 pixels around the point) must lie on the face too, or
        # the colour at a silhouette would mix in the background.
        mask = frags.pix_to_face[0] >= 0
        x0 = (x - 0.5).floor().long().clamp(0, w - 2)
        y0 = (y - 0.5).floor().long().clamp(0, h - 2)
        covered &= mask[y0, x0] & mask[y0, x0 + 1] & mask[y0 + 1, x0] & mask[y0 + 1, x0 + 1]
        front = normals[0, :, 2] > 0
        unoccluded = depth <= frags.zbuf[0, row, col] + DEPTH_TOLERANCE
        visible = inside & covered & front & unoccluded

        # grid_sample with align_corners=False puts pixel j's centre at j + 0.5 of [0, W]: the
        # renderer's convention, so screen coordinates map linearly onto [-1, 1].
        image = torch.from_numpy(np.array(photo, copy=True)).permute(2, 0, 1)[None].float()
        grid = torch.stack([2 * x / w - 1, 2 * y / h - 1], -1)[None, None]
        colours = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        colours = colours[0, :, 0].T * visible[:, None]  # (P, 3)
        texture = self.to_map(colours.round().clamp(0, 255).to(torch.uint8).numpy()[None])[0]
        vis_map = self.to_map(visible.numpy()[None, :, None], fill=False)[0, ..., 0]
        return texture, vis_map
