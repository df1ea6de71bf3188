"""The shape from 68 landmarks (``GeometryConfig.shape_from_landmarks``; issue 21).

The dense attribute decoders never learnt anyone's shape: the encoder's pooled latent holds no
identity (``training.evaluate.probe``). The 68 landmarks do. Fitted to ICT, the true landmarks of
held-out synthetic faces give 0.55x the mean face's 3D error (similarity-aligned), and an MLP trained
on the generator's draws does as well, 0.64x with 4 % landmark noise. So the geometry stream finds the
landmarks where it can see them (``LandmarkHead``: a small feature pyramid on the encoder's last three
stages, one soft-argmax heatmap per landmark), and ``LandmarkToFace`` turns them into ICT's identity
coefficients, blendshape weights and the pose; ICT's basis decodes those into A_id and A_exp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.facemodel import N_EXPRESSION, N_IDENTITY

from .config import POSE_DIM

N_LANDMARKS = 68


def soft_argmax(logits: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, L, h, w) heatmap logits over an image of ``image_size`` px -> (B, L, 2) the expected pixel
    (x, y) of each softmax-normalised map, cell centres at ``(j + 0.5) * image_size / w``."""
    b, n, h, w = logits.shape
    p = logits.flatten(2).softmax(-1).view(b, n, h, w)
    xs = (torch.arange(w, dtype=p.dtype, device=p.device) + 0.5) * (image_size / w)
    ys = (torch.arange(h, dtype=p.dtype, device=p.device) + 0.5) * (image_size / h)
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)


class LandmarkHead(nn.Module):
    """Encoder feature maps at strides 8, 16, 32 (widths ``in_widths``) -> (B, 68, 2) landmarks in
    input pixels: 1x1 lateral convolutions summed top-down, two 3x3 convolutions at stride 8, one
    heatmap per landmark, soft-argmax. A landmark the face hides is placed too: the coarse maps see
    the whole face."""

    def __init__(self, in_widths: tuple[int, ...], width: int = 128):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_widths)
        self.smooth = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.heatmaps = nn.Conv2d(width, N_LANDMARKS, 1)

    def forward(self, features: list[torch.Tensor], image_size: int) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for f, lateral in zip(features[-2::-1], list(self.lateral)[-2::-1]):
            x = F.interpolate(x, size=f.shape[-2:], mode="bilinear", align_corners=False) + lateral(f)
        return soft_argmax(self.heatmaps(self.smooth(x)), image_size)


# Blendshape weights start near zero (most of a face's 53 are), not at the sigmoid's 0.5.
EXPRESSION_LOGIT_OFFSET = 3.0


class LandmarkToFace(nn.Module):
    """(B, 68, 2) landmarks in pixels of a square ``image_size`` crop -> ICT identity coefficients
    (B, 100), blendshape weights (B, 53) in (0, 1) and the pose p_h (B, 6) (``training.models.pose``).

    The MLP sees the landmarks centred on their mean and divided by their box's sqrt(w h), so it
    learns a face's shape free of where and how large it is in the crop; it gives the pose in the
    same frame (the canonical origin's offset from the landmarks' mean in box units, and the log of
    pixels per canonical unit per box pixel), turned into the crop's p_h here."""

    def __init__(self, hidden: int = 1024, layers: int = 3):
        super().__init__()
        dims = [2 * N_LANDMARKS] + [hidden] * layers
        blocks = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.GELU()]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden, N_IDENTITY + N_EXPRESSION + POSE_DIM))

    def forward(self, landmarks: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        centre = landmarks.mean(1, keepdim=True)  # (B, 1, 2)
        span = landmarks.amax(1) - landmarks.amin(1)
        box = (span[:, 0] * span[:, 1]).clamp_min(1e-6).sqrt()[:, None]  # (B, 1)
        out = self.net(((landmarks - centre) / box[:, :, None]).flatten(1))
        id_coeffs, exp_logits, pose = out.split([N_IDENTITY, N_EXPRESSION, POSE_DIM], 1)
        half = image_size / 2.0
        origin = centre[:, 0] + box * pose[:, 3:5]  # (B, 2) pixels
        p_h = torch.cat([pose[:, :3], origin / half - 1.0, torch.log(box / half) + pose[:, 5:6]], 1)
        return id_coeffs, torch.sigmoid(exp_logits - EXPRESSION_LOGIT_OFFSET), p_h


def landmark_box(landmarks: torch.Tensor) -> torch.Tensor:
    """(B, 68, 2) -> (B,) sqrt(w h) of each landmark box, the NME's normaliser."""
    span = landmarks.amax(1) - landmarks.amin(1)
    return (span[:, 0] * span[:, 1]).clamp_min(1e-6).sqrt()


def landmark_nme(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 68, 2) each -> (B,) mean point-to-point distance over ``target``'s box; ``weight`` (B, 68)
    weighs the landmarks (a weighted mean), e.g. 0 where a photo's annotation follows another convention."""
    dist = (pred - target).norm(dim=-1)
    if weight is None:
        return dist.mean(1) / landmark_box(target)
    return (dist * weight).sum(1) / weight.sum(1).clamp_min(1e-6) / landmark_box(target)

