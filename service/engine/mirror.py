"""Mirror averaging of the geometry stage: the crop and its left-right mirror image run as one batch,
and the mirror's outputs, turned back into the crop's frame, are averaged with the crop's own.

A regression network's error on a face and on its mirror image is partly independent, so the
average is closer to the truth (on AFLW2000-3D dev, the mean NME of the yaw bins drops from 10.14 to
9.82 % for 0.2.0 and from 9.53 to 9.27 % for 0.3.0), and the result is exactly mirror-symmetric: the
mirrored photo gets the mirrored face. It doubles the geometry graph's rows, hence a setting
(``FACERECON_MIRROR_AVERAGE``), off by default for the CPU latency goal.

Turning the mirror's outputs back relies on two symmetries, checked by :func:`mirror_ready`:
- the UV layout is symmetric about its centre column, so ``A(mirror(u, v)) = A(u, v) * (-1, 1, 1)``;
- the camera (``service.engine.camera``): for the crop flipped about its vertical centre line
  (x -> N - x), ``R -> M R M`` with ``M = diag(-1, 1, 1)``, which is yaw -> -yaw, roll -> -roll,
  and tx -> -tx; pitch, ty and the scale stay.
"""

from __future__ import annotations

import numpy as np

from service.model_store import ModelStoreError

from .runtime import GEOMETRY_OUTPUTS
from .topology import MeshTopology

# p_h = (yaw, pitch, roll, tx, ty, log_scale): the signs that turn a mirror image's pose back.
POSE_SIGNS = np.array([-1.0, 1.0, -1.0, -1.0, 1.0, 1.0], np.float32)
# p_l = 9 SH coefficients x RGB in the renderer's basis order (1, y, z, x, xy, yz, 3z^2-1, xz, x^2-y^2):
# the mirror negates x, so the terms odd in x change sign.
SH_SIGNS = np.array([1, 1, 1, -1, -1, 1, 1, -1, 1], np.float32)
# The 68-point (iBUG 300-W) scheme's left-right pairs: landmark i of a face is landmark MIRROR_68[i] of its mirror.
MIRROR_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)


def mirror_ready(topo: MeshTopology, tolerance_px: float = 1e-3) -> bool:
    """Whether ``topo``'s UV layout is left-right symmetric about its centre column: the 68 UV
    landmarks mirror onto their pairs and (nearly) every face texel onto a face texel."""
    flipped = topo.landmarks_uv[MIRROR_68] * (-1.0, 1.0) + (topo.size - 1, 0.0)
    mask = topo.uv_mask.astype(bool)
    return bool(np.abs(flipped - topo.landmarks_uv).max() <= tolerance_px
                and (mask & mask[:, ::-1]).sum() >= 0.999 * mask.sum())


def require_mirror_ready(topo: MeshTopology, model: str) -> None:
    """Refuse mirror averaging for ``model`` (its name, for the message) when :func:`mirror_ready` is false."""
    if not mirror_ready(topo):
        raise ModelStoreError(f"{model}: its UV layout is not left-right symmetric, so mirror averaging cannot "
                              "apply; set FACERECON_MIRROR_AVERAGE=false")


def mirror_images(images: np.ndarray) -> np.ndarray:
    """(B, 3, N, N) crops -> their left-right mirror images, (B, 3, N, N)."""
    return np.ascontiguousarray(images[..., ::-1])


def unmirror(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Geometry outputs of mirrored crops (in ``GEOMETRY_OUTPUTS`` order, batch first) -> the same
    faces in the unmirrored crops' frame. ``p_t`` is returned as it is: the albedo model's
    coefficients have no mirror rule, so the averaged result takes the crop's own (see
    :func:`average_with_mirror`)."""
    out = dict(zip(GEOMETRY_OUTPUTS, outputs))
    sign_x = np.array([-1.0, 1.0, 1.0], np.float32)[:, None, None]
    for name in ("a_id", "a_exp"):
        out[name] = out[name][..., ::-1] * sign_x
    out["p_h"] = out["p_h"] * POSE_SIGNS
    out["p_l"] = (out["p_l"].reshape(-1, 9, 3) * SH_SIGNS[:, None]).reshape(out["p_l"].shape)
    return [np.ascontiguousarray(out[name], dtype=np.float32) for name in GEOMETRY_OUTPUTS]


def average_with_mirror(outputs: list[np.ndarray], mirrored: list[np.ndarray]) -> list[np.ndarray]:
    """The mean of the crops' outputs and their mirror images' outputs (turned back); ``p_t`` the crops'."""
    back = unmirror(mirrored)
    return [own if name == "p_t" else (own + theirs) / 2
            for name, own, theirs in zip(GEOMETRY_OUTPUTS, outputs, back)]


def run_geometry_mirrored(run, images: np.ndarray) -> list[np.ndarray]:
    """``run`` (feeds -> outputs in ``GEOMETRY_OUTPUTS`` order) on the B crops and their B mirror
    images in one call of 2B rows; returns the averaged outputs for the B crops."""
    both = run({"image": np.concatenate([images, mirror_images(images)])})
    b = len(images)
    return average_with_mirror([o[:b] for o in both], [o[b:] for o in both])


def run_geometry(run, images: np.ndarray, mirror_average: bool) -> list[np.ndarray]:
    """The geometry stage for (B, 3, N, N) crops: ``run`` on them, mirror-averaged when asked."""
    return run_geometry_mirrored(run, images) if mirror_average else run({"image": images})
