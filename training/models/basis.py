"""ICT's linear face model inside the geometry stream: identity and expression coefficients -> base
Attribute Spatial Maps, on which the attribute decoders add a residual (``GeometryConfig.linear_basis``).

A dense decoder has to learn the mean face before it can learn anyone's face, and what it learns
after that is small against its own noise (issue 21's diagnosis). Decoding the coefficients through
the face model's own basis gives every prediction a valid face by construction and leaves the
network a low-dimensional target: 100 identity coefficients and 53 blendshape weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.facemodel import N_EXPRESSION, N_IDENTITY, UVFaceModel


def decode_basis(coeffs: torch.Tensor, basis: torch.Tensor, mean: torch.Tensor | None, gather: torch.Tensor,
                 size: int) -> torch.Tensor:
    """Coefficients -> a UV map, zero outside the mask.

    Args:
        coeffs: (B, K); basis: (K, 3P) the basis at the P valid pixels, (x, y, z) per pixel;
        mean: (3P,) or None; gather: (S * S,) int64, each map pixel's valid-pixel index, P outside
        the mask (a zero row); size: S.
    Returns:
        (B, 3, S, S).
    """
    values = coeffs @ basis
    if mean is not None:
        values = values + mean
    values = values.reshape(coeffs.shape[0], -1, 3)
    padded = torch.cat([values, values.new_zeros(values.shape[0], 1, 3)], dim=1)
    return padded[:, gather].reshape(coeffs.shape[0], size, size, 3).permute(0, 3, 1, 2)


class LinearFaceBasis(nn.Module):
    """(B, 100) identity coefficients, (B, 53) expression weights -> a_id, a_exp (B, 3, S, S).

    ``a_id = mean + sum_k id_k B_id[k]`` and ``a_exp = sum_k exp_k B_exp[k]`` in canonical units, equal
    to ``UVFaceModel.identity_map`` / ``expression_map`` (the slow reference, through the mesh). The
    basis is a constant of the face model, not a parameter: its buffers are not saved in checkpoints
    (the exported graph carries it as constants).
    """

    def __init__(self, face_model: UVFaceModel):
        super().__init__()
        mean, identity, expression = face_model.pixel_basis()
        p = mean.shape[0]
        gather = np.full(face_model.size * face_model.size, p, np.int64)
        gather[face_model.layout.flat_index] = np.arange(p)
        self.size = face_model.size
        self.register_buffer("mean", torch.from_numpy(mean.reshape(-1)), persistent=False)
        self.register_buffer("identity", torch.from_numpy(identity.reshape(N_IDENTITY, -1)), persistent=False)
        self.register_buffer("expression", torch.from_numpy(expression.reshape(N_EXPRESSION, -1)), persistent=False)
        self.register_buffer("gather", torch.from_numpy(gather), persistent=False)

    def forward(self, id_coeffs: torch.Tensor, exp_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_id = decode_basis(id_coeffs, self.identity, self.mean, self.gather, self.size)
        a_exp = decode_basis(exp_weights, self.expression, None, self.gather, self.size)
        return a_id, a_exp
