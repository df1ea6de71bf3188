"""Jaw landmark marching on the geometry stream's position maps, for L_ali against 2D annotations.

Annotated photos (Helen, AFW, dlib's landmarks on UTKFace) put the jaw points of the side turned away
on the cheek's silhouette, while the network's 68 landmarks are fixed points of the face, which is
what the service returns and what AFLW2000-3D's fitted landmarks are. A loss comparing the two pulls
the fixed jaw points out to the silhouette: in a one-off check 0.3.0, trained that way, put the far
side's jaw on average 18 % (at 30-60° of yaw) and 33 % (60-90°) of the face box outside AFLW2000-3D's
points. As the fitting does (``training.fitting.contour``), the loss instead compares each such
annotation with the silhouette point of its jaw parallel, read from A through the masked-bilinear
taps of the parallel's vertices.
"""

from __future__ import annotations

import numpy as np
import torch

from training.facemodel import UVFaceModel
from training.fitting.contour import JAW, JawContour
from training.models.pose import pose_to_camera


class JawMarching:
    """The jaw parallels of ``training.fitting.contour`` as taps into (B, 3, S, S) position maps."""

    def __init__(self, model: UVFaceModel, device: torch.device | str = "cpu"):
        topo = model.topology
        self.contour = JawContour.build(model.kit, model.region, model.frame.to_canonical(model.kit.neutral))
        order = np.argsort(topo.ict_vertex_ids)
        ids = self.contour.candidates.ravel()
        rows = order[np.searchsorted(topo.ict_vertex_ids, ids, sorter=order)]
        if not np.array_equal(topo.ict_vertex_ids[rows], ids):
            raise ValueError("a jaw parallel leaves the UV layout's face region")
        self.tap_index = torch.from_numpy(topo.ict_sample_index[rows].astype(np.int64)).to(device)  # (17 * K, 4)
        self.tap_weight = torch.from_numpy(topo.ict_sample_weight[rows].astype(np.float32)).to(device)

    def candidate_points(self, a_full: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 17 * K, 3) canonical positions of the parallels' vertices."""
        b, c = a_full.shape[:2]
        taps = a_full.reshape(b, c, -1)[:, :, self.tap_index.ravel()].reshape(b, c, *self.tap_index.shape)
        return (taps * self.tap_weight.to(a_full)).sum(-1).permute(0, 2, 1)

    def landmarks(self, a_full: torch.Tensor, p_h: torch.Tensor, fixed: torch.Tensor, image_size: int) -> torch.Tensor:
        """The 68 landmarks an annotator would mark.

        Args:
            a_full: (B, 3, S, S) position maps (canonical units).
            p_h: (B, 6) head pose.
            fixed: (B, 68, 2) the fixed landmarks (``training.stages.common.project_landmarks``), pixels.
            image_size: the square input's side, pixels.
        Returns:
            (B, 68, 2) pixels: ``fixed`` with the jaw points of the side turned away replaced by
            their parallels' silhouette points; differentiable in A and p_h (the choice of point is not).
        """
        points = self.candidate_points(a_full)
        yaw, pitch = p_h[:, 0].detach(), p_h[:, 1].detach()
        column = self.contour.outermost(points.detach(), yaw, pitch)  # (B, 17)
        b, k = points.shape[0], self.contour.candidates.shape[1]
        chosen = points.reshape(b, 17, k, 3).gather(2, column[:, :, None, None].expand(b, 17, 1, 3))[:, :, 0]
        marched = pose_to_camera(p_h, image_size).transform_points_screen(chosen)[..., :2]
        away = self.contour.turned_away(yaw)[..., None]
        return torch.cat([torch.where(away, marched, fixed[:, JAW]), fixed[:, len(JAW):]], 1)
