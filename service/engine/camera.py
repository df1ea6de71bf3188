"""The manifest's weak-perspective camera: canonical points + p_h -> crop pixels.

p_h = (yaw, pitch, roll, tx, ty, log_scale), R = Rz(roll) @ Ry(yaw) @ Rx(pitch) and
x = N/2 (1 + s (R X)_x + tx), y = N/2 (1 - s (R X)_y + ty) with s = exp(log_scale), N the crop side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSE_FIELDS = ("yaw", "pitch", "roll", "tx", "ty", "log_scale")


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) R = Rz(roll) @ Ry(yaw) @ Rx(pitch), applied to column vectors."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Camera:
    rotation: np.ndarray  # (3, 3)
    scale: float  # exp(log_scale): image half-widths per canonical unit
    translation: tuple[float, float]  # (tx, ty) in image half-widths
    size: int  # N, crop side in pixels

    @classmethod
    def from_pose(cls, p_h: np.ndarray, size: int, fields: list[str] | None = None) -> "Camera":
        if fields is not None and tuple(fields) != POSE_FIELDS:
            raise ValueError(f"pose fields {fields} are not the {POSE_FIELDS} this service implements")
        yaw, pitch, roll, tx, ty, log_scale = (float(v) for v in p_h)
        return cls(rotation(yaw, pitch, roll), float(np.exp(log_scale)), (tx, ty), size)

    def view(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) canonical -> (..., 3) view frame (x right, y up, z towards the camera)."""
        return points @ self.rotation.T

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) canonical -> (..., 3) crop pixels (x right, y down) and depth in canonical units
        (smaller = closer, as the renderer's screen frame)."""
        v = self.view(points)
        half = self.size / 2.0
        x = half * (1.0 + self.scale * v[..., 0] + self.translation[0])
        y = half * (1.0 - self.scale * v[..., 1] + self.translation[1])
        return np.stack([x, y, -v[..., 2]], -1)
