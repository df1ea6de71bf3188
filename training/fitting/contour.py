"""Jaw-contour landmark marching (Zhu et al., "High-fidelity pose and expression normalization", 2015).

On a turned face the annotated jaw points 0-16 of the side turned away sit on the silhouette of the
cheek, not on fixed mesh vertices: the fixed jaw vertices of that side have rotated out of sight.
For each jaw landmark we precompute a "parallel": the face-region vertices in a horizontal band at
the landmark's height (neutral head), on its side of the face, from just behind the landmark
forward to the midline. For pure yaw the silhouette point of such a horizontal slice is the slice's
most extreme vertex along the rotated x axis, so during the fit the landmarks of the side turned
away take that vertex; those of the side facing the camera, and the chin (8), keep ICT's fixed
vertex, which is what annotators mark there (the jaw line itself).

The extreme is taken after yaw and pitch only: roll turns the whole picture in the image plane and
does not change which points lie on the silhouette.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.facemodel import FaceKit, FaceRegion

JAW = np.arange(17)
CHIN = 8
MIN_HALF_BAND = 0.02  # canonical units (~3.5 mm): lower jaw landmarks are closer in height than that
BEHIND = 0.05  # how far behind the fixed vertex (towards the ear) a parallel reaches, canonical units


@dataclass(frozen=True)
class JawContour:
    """Candidate vertices for the 17 jaw landmarks.

    Attributes (K = the longest parallel):
        candidates: (17, K) int64 ICT vertex ids, short rows padded by repeating their last id
            (a duplicate cannot change which vertex is the most extreme).
        side: (17,) float32, -1 for landmarks 0-7 (ICT -x, the image's left on a frontal face),
            +1 for 9-16, 0 for the chin (never marches).
        fixed: (17,) int64 ICT's own jaw landmark vertices.
    """

    candidates: np.ndarray
    side: np.ndarray
    fixed: np.ndarray

    @classmethod
    def build(cls, kit: FaceKit, region: FaceRegion, canonical: np.ndarray) -> "JawContour":
        """canonical: (N, 3) the neutral ICT head in the canonical frame (x right, y up, z towards the viewer)."""
        ids = region.vertex_ids
        pts = canonical[ids]
        lm = canonical[kit.landmarks68[JAW]]
        side = np.sign(np.round(lm[:, 0], 6)).astype(np.float32)
        side[CHIN] = 0.0
        gaps = np.abs(np.diff(lm[:, 1]))
        lines = []
        for i in JAW:
            fixed = int(kit.landmarks68[i])
            if side[i] == 0:
                lines.append(np.array([fixed]))
                continue
            near = [gaps[i - 1] if i > 0 else gaps[i], gaps[i] if i < 16 else gaps[i - 1]]
            half = max(MIN_HALF_BAND, 0.5 * min(near))
            keep = (
                (np.abs(pts[:, 1] - lm[i, 1]) <= half)
                & (pts[:, 0] * side[i] > 0)
                & (pts[:, 2] >= lm[i, 2] - BEHIND)
            )
            lines.append(np.union1d(ids[keep], [fixed]))
        k = max(len(x) for x in lines)
        table = np.stack([np.pad(x, (0, k - len(x)), mode="edge") for x in lines]).astype(np.int64)
        return cls(table, side, kit.landmarks68[JAW].astype(np.int64))

    def outermost(self, points: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """Which candidate of each parallel lies on the silhouette.

        Args:
            points: (B, 17 * K, 3) positions of ``candidates.ravel()`` (canonical).
            yaw, pitch: (B,) radians (``training.render.euler_to_rotation`` convention).
        Returns:
            (B, 17) int64 column of ``candidates``: each parallel's most extreme point along the
            rotated x axis, on its own side of the face.
        """
        b, k = points.shape[0], self.candidates.shape[1]
        # The view-frame x axis after pitch then yaw, expressed in the head frame.
        axis = torch.stack([torch.cos(yaw), torch.sin(yaw) * torch.sin(pitch), torch.sin(yaw) * torch.cos(pitch)], -1)
        x_rot = (points @ axis.to(points.dtype)[:, :, None]).reshape(b, 17, k)
        side = torch.from_numpy(self.side).to(points)
        return (x_rot * side[:, None]).argmax(-1)

    def turned_away(self, yaw: torch.Tensor, min_yaw: float = 0.0) -> torch.Tensor:
        """(B,) radians -> (B, 17) bool: the jaw landmarks on the side turned away from the camera,
        none for faces turned less than ``min_yaw``."""
        # yaw > 0 turns the nose towards +x, so the +x side (side = +1) is the one turned away.
        side = torch.from_numpy(self.side).to(yaw.device, yaw.dtype)
        return (side[None] * torch.sign(yaw)[:, None] > 0) & (yaw.abs() >= min_yaw)[:, None]

    def select(self, points: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor, min_yaw: float = 0.0) -> torch.Tensor:
        """The jaw landmarks' vertices for the current fit.

        Args:
            points: (B, 17 * K, 3) current model positions of ``candidates.ravel()`` (canonical).
            yaw, pitch: (B,) radians (``training.render.euler_to_rotation`` convention).
            min_yaw: radians; faces turned less than this keep all their fixed vertices.
        Returns:
            (B, 17) int64 ICT vertex ids: the silhouette vertex of each parallel on the side turned
            away, ICT's fixed landmark vertex elsewhere.
        """
        b = points.shape[0]
        marched = torch.from_numpy(self.candidates)[torch.arange(17)[None], self.outermost(points, yaw, pitch)]
        return torch.where(self.turned_away(yaw, min_yaw), marched, torch.from_numpy(self.fixed)[None].expand(b, 17))
