"""The head pose p_h and the weak-perspective camera it stands for.

p_h = (yaw, pitch, roll, tx, ty, log_scale): angles in radians as ``training.render.euler_to_rotation``
takes them; a canonical point X lands on the photo at
``x = W/2 * (1 + s * (R X)_x + tx)``, ``y = H/2 * (1 - s * (R X)_y + ty)`` (pixels, y down) with
``s = exp(log_scale)``. Being relative to the image size, the same p_h fits any resolution.
"""

from __future__ import annotations

import torch

from training.render import WeakPerspectiveCamera, euler_to_rotation

POSE_FIELDS = ("yaw", "pitch", "roll", "tx", "ty", "log_scale")


def pose_to_camera(p_h: torch.Tensor, image_size: int) -> WeakPerspectiveCamera:
    """p_h: (B, 6) -> the renderer's camera for a square image of ``image_size`` pixels."""
    half = image_size / 2.0
    rotation = euler_to_rotation(p_h[:, 0], p_h[:, 1], p_h[:, 2])
    return WeakPerspectiveCamera(
        rotation=rotation,
        scale=torch.exp(p_h[:, 5]) * half,
        translation=p_h[:, 3:5] * half,
        image_size=(image_size, image_size),
    )


def camera_manifest() -> dict:
    """The manifest's ``camera`` entry: how the service turns p_h into pixels."""
    return {
        "type": "weak_perspective",
        "pose_fields": list(POSE_FIELDS),
        "rotation": "R = Rz(roll) @ Ry(yaw) @ Rx(pitch); positive yaw turns the nose to the image's right",
        "projection": "x = W/2 * (1 + exp(log_scale) * (R X)_x + tx); y = H/2 * (1 - exp(log_scale) * (R X)_y + ty)",
    }
