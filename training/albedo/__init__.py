"""Our own statistical UV albedo model (p_t -> I_ua), built from real photos."""

from .build import PCAResult, delight, estimate_sh, masked_pca, mirror_fill, reconstruction_error, sh_matrix

__all__ = ["PCAResult", "delight", "estimate_sh", "masked_pca", "mirror_fill", "reconstruction_error", "sh_matrix"]
