"""Cameras: world vertices (B, V, 3) -> screen vertices (B, V, 3).

Frames
------
World / view frame: x right, y up, z towards the camera (right-handed, OpenGL-like), so a face
looking at the camera has +z normals towards the viewer.

Screen frame (the rasterizer's input): x, y in pixels with x right and y DOWN; pixel (row i,
col j) covers [j, j+1) x [i, i+1) and is sampled at its centre (j + 0.5, i + 0.5). The third
coordinate is a depth where SMALLER = CLOSER to the camera:

* weak perspective: depth = -z_view (world units, not scaled), may be negative;
* perspective: depth = -z_view = distance along the optical axis (> 0 in front of the camera).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _axis_rotation(angle: torch.Tensor, axis: str) -> torch.Tensor:
    """Right-handed rotation by ``angle`` (B,) radians about a world axis -> (B, 3, 3)."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "x":
        rows = [one, zero, zero, zero, c, -s, zero, s, c]
    elif axis == "y":
        rows = [c, zero, s, zero, one, zero, -s, zero, c]
    elif axis == "z":
        rows = [c, -s, zero, s, c, zero, zero, zero, one]
    else:
        raise ValueError(f"unknown axis {axis!r}")
    return torch.stack(rows, dim=-1).reshape(*angle.shape, 3, 3)


def euler_to_rotation(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from yaw / pitch / roll.

    Args:
        yaw: (B,) radians, right-handed about the world y (up) axis; positive yaw turns +z
            (the nose) towards +x (the image's right).
        pitch: (B,) radians, right-handed about the x axis; positive pitch turns +z towards -y
            (nose down).
        roll: (B,) radians, right-handed about the z axis (towards the viewer); positive roll
            turns +x towards +y (counter-clockwise on screen).

    Returns:
        (B, 3, 3) ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``, applied to column vectors:
        ``v_view = R @ v_world`` (pitch first, then yaw, then roll).
    """
    yaw, pitch, roll = (torch.as_tensor(a) for a in (yaw, pitch, roll))
    return _axis_rotation(roll, "z") @ _axis_rotation(yaw, "y") @ _axis_rotation(pitch, "x")


def as_hw(image_size) -> tuple[int, int]:
    """``int`` or ``(H, W)`` -> ``(H, W)``."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def weak_perspective_project(
    verts: torch.Tensor,
    rotation: torch.Tensor,
    scale: torch.Tensor,
    translation: torch.Tensor,
    image_size,
) -> torch.Tensor:
    """Scaled orthographic projection.

    Args:
        verts: (B, V, 3) world vertices.
        rotation: (B, 3, 3) world -> view rotation (``v_view = R @ v``).
        scale: (B,) pixels per world unit.
        translation: (B, 2) pixel offset of the world origin from the image centre, in screen
            axes (x right, y down).
        image_size: int or (H, W).

    Returns:
        (B, V, 3) screen vertices ``(W/2 + s*x_v + tx, H/2 - s*y_v + ty, -z_v)`` where
        ``(x_v, y_v, z_v) = R @ v``.
    """
    h, w = as_hw(image_size)
    view = verts @ rotation.transpose(-1, -2)
    s = scale.reshape(-1, 1)
    x = w / 2 + s * view[..., 0] + translation[:, None, 0]
    # Screen y grows downwards while world y grows upwards.
    y = h / 2 - s * view[..., 1] + translation[:, None, 1]
    return torch.stack([x, y, -view[..., 2]], dim=-1)


def perspective_project(
    verts: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    focal_length: torch.Tensor,
    principal_point: torch.Tensor | None,
    image_size,
) -> torch.Tensor:
    """Pinhole projection; the camera sits at the view-frame origin looking down -z.

    Args:
        verts: (B, V, 3) world vertices.
        rotation: (B, 3, 3), translation: (B, 3): ``v_view = R @ v + t``.
        focal_length: (B,) or (B, 2) focal length(s) in pixels (fx, fy).
        principal_point: (B, 2) pixel position (x right, y down) of the optical axis, or None
            for the image centre (W/2, H/2).
        image_size: int or (H, W).

    Returns:
        (B, V, 3) screen vertices ``(cx + fx*x_v/d, cy - fy*y_v/d, d)`` with ``d = -z_v``.
        No near-plane clipping: keep the mesh in front of the camera (d > 0).
    """
    h, w = as_hw(image_size)
    b = verts.shape[0]
    view = verts @ rotation.transpose(-1, -2) + translation[:, None, :]
    f = focal_length.reshape(b, -1).expand(b, 2).to(verts)
    if principal_point is None:
        principal_point = verts.new_tensor([w / 2, h / 2]).expand(b, 2)
    depth = -view[..., 2]
    x = principal_point[:, None, 0] + f[:, None, 0] * view[..., 0] / depth
    y = principal_point[:, None, 1] - f[:, None, 1] * view[..., 1] / depth
    return torch.stack([x, y, depth], dim=-1)


@dataclass
class WeakPerspectiveCamera:
    """Batched weak-perspective camera; see :func:`weak_perspective_project`.

    Attributes:
        rotation: (B, 3, 3); scale: (B,); translation: (B, 2) pixels; image_size: (H, W).
    """

    rotation: torch.Tensor
    scale: torch.Tensor
    translation: torch.Tensor
    image_size: tuple[int, int]

    # Perspective-correct interpolation is meaningless for an affine camera.
    is_perspective = False

    def to_view(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) world -> (B, V, 3) view frame (x right, y up, z towards the camera)."""
        return verts @ self.rotation.transpose(-1, -2)

    def transform_points_screen(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) world -> (B, V, 3) screen (x, y pixels with y down, depth)."""
        return weak_perspective_project(
            verts, self.rotation, self.scale, self.translation, self.image_size
        )


@dataclass
class PerspectiveCamera:
    """Batched pinhole camera; see :func:`perspective_project`.

    Attributes:
        rotation: (B, 3, 3); translation: (B, 3); focal_length: (B,) or (B, 2) pixels;
        principal_point: (B, 2) pixels or None (image centre); image_size: (H, W).
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    focal_length: torch.Tensor
    principal_point: torch.Tensor | None
    image_size: tuple[int, int]

    is_perspective = True

    def to_view(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) world -> (B, V, 3) view frame (camera at origin, looking down -z)."""
        return verts @ self.rotation.transpose(-1, -2) + self.translation[:, None, :]

    def transform_points_screen(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) world -> (B, V, 3) screen (x, y pixels with y down, depth > 0)."""
        return perspective_project(
            verts,
            self.rotation,
            self.translation,
            self.focal_length,
            self.principal_point,
            self.image_size,
        )

    @staticmethod
    def focal_from_fov(fov_degrees: float, image_width: int) -> float:
        """Focal length in pixels for a horizontal field of view."""
        return image_width / (2.0 * math.tan(math.radians(fov_degrees) / 2.0))
