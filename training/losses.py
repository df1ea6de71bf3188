"""The paper's losses (Eqs. 4-8, 15-17, 19-23) as plain functions of tensors.

Shapes: maps are (B, C, S, S); ``mask`` / ``weight`` are (S, S) or (B, 1, S, S) and broadcast.
Every map loss averages over the pixels where its mask is non-zero, so the values do not depend
on S and the paper's loss weights keep their meaning across configs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of (B, C, H, W) values over the pixels of a (H, W) / (B, 1, H, W) weight, per channel."""
    weight = weight.to(values.dtype).expand(values.shape[0], 1, *values.shape[-2:])
    return (values * weight).sum() / (weight.sum() * values.shape[1]).clamp_min(EPS)


def parametric_loss(pred: torch.Tensor, target: torch.Tensor, p_t: torch.Tensor, tau: float = 5e-2) -> torch.Tensor:
    """L_p (Eq. 4): ||P - P_hat||^2 + tau ||p_t||^2, averaged over the batch. pred, target: (B, D)."""
    return (pred - target).square().sum(1).mean() + tau * p_t.square().sum(1).mean()


def asm_loss(a_id, a_id_gt, a_exp, a_exp_gt, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_asm (Eq. 5): W-weighted squared error on A_id plus plain squared error on A_exp.

    a_*: (B, 3, S, S); weight W and mask: (S, S). The W term is normalised by the mask, not by W,
    so W's emphasis survives.
    """
    w = (weight * mask)[None, None]
    m = mask[None, None].to(a_id.dtype)
    identity = ((a_id - a_id_gt).square() * w).sum() / (m.sum() * a_id.shape[0]).clamp_min(EPS)
    expression = masked_mean((a_exp - a_exp_gt).square(), m) * 3
    return identity + expression


def symmetry_loss(a_id: torch.Tensor, mirror_map: torch.Tensor) -> torch.Tensor:
    """L_sym (Eq. 6): |A_id - flip(A_id)|_1 with flip = the UV mirror map and x negated.

    a_id: (B, 3, S, S); mirror_map: (S, S) long, flat index of the mirrored pixel or -1.
    """
    b, c, s, _ = a_id.shape
    valid = mirror_map.reshape(-1) >= 0
    flat = a_id.reshape(b, c, s * s)
    mirrored = flat[:, :, mirror_map.reshape(-1)[valid]] * torch.tensor([-1.0, 1.0, 1.0], device=a_id.device)[:, None]
    return (flat[:, :, valid] - mirrored).abs().mean()


def laplacian(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Grid Laplacian: each valid pixel minus the mean of its valid 4-neighbours. (B, C, S, S)."""
    m = mask[None, None].to(a.dtype)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], device=a.device)[None, None]
    c = a.shape[1]
    neighbour_sum = F.conv2d(a * m, kernel.expand(c, 1, 3, 3), padding=1, groups=c)
    neighbour_count = F.conv2d(m, kernel, padding=1)
    return (a - neighbour_sum / neighbour_count.clamp_min(1.0)) * m * (neighbour_count > 0)


def laplacian_loss(a_full: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_reg (Eq. 7): squared Laplacian of A = A_id + A_exp over the mesh (the UV grid)."""
    return masked_mean(laplacian(a_full, mask).square(), mask[None, None].to(a_full.dtype)) * 3


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_rec (Eq. 15) and L_pix (Eq. 19): mean squared error over the masked pixels."""
    return masked_mean((pred - target).square(), mask)


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """L_adv (Eq. 16), the non-saturating form: BCE of PatchGAN logits against real / fake."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def contextual_loss(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 0.5) -> torch.Tensor:
    """L_con (Eq. 17): Mechrez et al.'s contextual loss between feature maps.

    x, y: (B, C, H, W) (or (B, C, N) feature sets). Features are centred on y's mean and L2
    normalised; cosine distances are made relative to each x-feature's nearest y-feature,
    turned into affinities exp((1 - d_rel) / h), normalised per x-feature, and
    CX = mean over y of the max over x. Returns mean over the batch of -log CX.
    """
    x, y = x.flatten(2), y.flatten(2)
    mu = y.mean(dim=2, keepdim=True)
    x = F.normalize(x - mu, dim=1)
    y = F.normalize(y - mu, dim=1)
    dist = 1.0 - torch.einsum("bci,bcj->bij", x, y)  # (B, Nx, Ny)
    relative = dist / (dist.min(dim=2, keepdim=True).values + 1e-5)
    affinity = torch.softmax((1.0 - relative) / bandwidth, dim=2)
    cx = affinity.max(dim=1).values.mean(dim=1)
    return -torch.log(cx + 1e-5).mean()


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L_ali (Eq. 22): mean squared 2D distance of 68 landmarks. pred, target: (B, 68, 2)."""
    d = (pred - target).square().sum(-1)
    if weight is not None:
        d = d * weight
    return d.mean()


def identity_loss(feat_a: torch.Tensor, feat_b: torch.Tensor) -> torch.Tensor:
    """L_id (Eq. 21) with a differentiable substitute network: 1 - cosine similarity. (B, D) each."""
    return (1.0 - F.cosine_similarity(feat_a, feat_b, dim=1)).mean()
