"""The texture stream (paper Sec. III-B): albedo map I_ua from p_t, refined by a U-Net G_t whose
mid-level features are restyled region by region (SRSM) after the photo, with the regions found by
SSRPM.

Adaptation (DESIGN.md): the paper's I_o and I_ua share spatial locations; ours live in different
spaces (photo pixels vs UV). The stream therefore unwraps the photo into UV itself, through
``uv_grid`` (where each UV pixel lands in the photo, from the geometry stream), and moves the
landmark branch's image-space regions into UV the same way. Everything after that is UV-aligned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextureConfig

EPS = 1e-5


class AlbedoModel(nn.Module):
    """Linear UV albedo model: p_t (B, K) -> I_ua (B, 3, S, S) = mean + sum_k p_t[k] * std[k] * basis[k].

    The buffers are our own albedo model (built from real photos by ``training.albedo``), so the
    exported texture model carries it as constants.
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())  # (3, S, S)
        self.register_buffer("basis", basis.float())  # (K, 3, S, S)
        self.register_buffer("std", std.float())  # (K,)

    @classmethod
    def load(cls, path, k: int | None = None) -> "AlbedoModel":
        """From ``python -m training.albedo``'s npz (mean, basis, std), keeping the first ``k`` components."""
        import numpy as np

        with np.load(path) as d:
            k = k or len(d["std"])
            if len(d["std"]) < k:
                raise ValueError(f"{path} holds {len(d['std'])} albedo components, the config needs {k}")
            return cls(torch.from_numpy(d["mean"]), torch.from_numpy(d["basis"][:k]), torch.from_numpy(d["std"][:k]))

    @classmethod
    def placeholder(cls, k: int, size: int, seed: int = 0) -> "AlbedoModel":
        """A smooth random model of the right shapes, for tests and before a real one is built."""
        g = torch.Generator().manual_seed(seed)
        coarse = torch.rand(k, 3, 4, 4, generator=g) - 0.5
        basis = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        return cls(torch.full((3, size, size), 0.5), basis, torch.linspace(0.2, 0.02, k))

    def forward(self, p_t: torch.Tensor) -> torch.Tensor:
        k = self.basis.shape[0]
        return self.mean + (p_t * self.std).matmul(self.basis.reshape(k, -1)).reshape(-1, *self.mean.shape)


def conv_in_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True))


class SSRPM(nn.Module):
    """Shared Semantic Region Prediction Module.

    Aligns content features X_u and style features X_o with two filter groups, sums them, turns the
    sum into n soft regions F_s(X') and adds the landmark branch's regions X_a scaled by a learned
    kappa: X_s = softmax(F_s(X') + kappa * X_a) over the n channels (Eqs. 9-11).
    """

    def __init__(self, channels: int, regions: int, landmarks: int, kappa_init: float):
        super().__init__()
        self.align_u = nn.Conv2d(channels, channels, 3, padding=1)
        self.align_o = nn.Conv2d(channels, channels, 3, padding=1)
        self.to_regions = nn.Conv2d(channels, regions, 1)
        self.landmark_branch = nn.Sequential(
            nn.Conv2d(landmarks + 3, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, regions, 3, padding=1)
        )
        self.kappa = nn.Parameter(torch.tensor(float(kappa_init)))

    def forward(self, x_u, x_o, heatmaps, image, uv_grid):
        """x_u, x_o: (B, C, h, w) UV features; heatmaps (B, 68, H, W) and image (B, 3, H, W) in photo
        space; uv_grid (B, h, w, 2) photo positions of the UV pixels. Returns X_s (B, n, h, w)."""
        x_prime = torch.relu(self.align_u(x_u) + self.align_o(x_o))
        # At half the photo's resolution: the regions are soft and the branch is the stream's costliest
        # full-resolution convolution otherwise.
        x_a_photo = self.landmark_branch(F.avg_pool2d(torch.cat([heatmaps, image], 1), 2))
        x_a = F.grid_sample(x_a_photo, uv_grid, mode="bilinear", padding_mode="border", align_corners=False)
        return torch.softmax(self.to_regions(x_prime) + self.kappa * x_a, dim=1)


def region_stats(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted per-region mean and std of features.

    x: (B, C, h, w); weight: (B, n, h, w) >= 0. Returns mean, std: (B, n, C).
    """
    total = weight.sum(dim=(2, 3)).clamp_min(EPS)[..., None]  # (B, n, 1)
    mean = torch.einsum("bchw,bnhw->bnc", x, weight) / total
    second = torch.einsum("bchw,bnhw->bnc", x * x, weight) / total
    return mean, (second - mean * mean).clamp_min(0.0).add(EPS).sqrt()


class SRSM(nn.Module):
    """Semantic Region Stylization Mechanism (Eqs. 12-14), region-wise instance normalisation.

    Each soft region of the content features is normalised by its own statistics and re-styled
    with alpha_i, beta_i read from the same region of the photo's features (two conv layers, then
    a visibility-weighted average over the region): sum_i ((X_u - mu_i) / sigma_i * alpha_i + beta_i) * X_s,i.
    alpha_i, beta_i are vectors per region, not maps, because the photo's layout is not the UV layout.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.style = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.to_alpha = nn.Conv2d(channels, channels, 3, padding=1)
        self.to_beta = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x_u, x_o, regions, visibility):
        """x_u, x_o: (B, C, h, w); regions: (B, n, h, w) summing to 1; visibility: (B, 1, h, w)."""
        mu, sigma = region_stats(x_u, regions)
        style = self.style(x_o)
        seen = regions * visibility
        alpha, _ = region_stats(self.to_alpha(style), seen)  # (B, n, C)
        beta, _ = region_stats(self.to_beta(style), seen)
        normalised = (x_u[:, None] - mu[..., None, None]) / sigma[..., None, None]  # (B, n, C, h, w)
        styled = normalised * (1.0 + alpha[..., None, None]) + beta[..., None, None]
        return (styled * regions[:, :, None]).sum(1)


class TextureStream(nn.Module):
    """G_t: (p_t, photo, heatmaps, uv_grid, uv_visibility) -> albedo map I_a (B, 3, S, S) in [0, 1],
    the linear albedo I_ua corrected in logit space (equal to it before training).

    A U-Net over I_ua with additive skips (level l adds into level h - l), SRSM at ``srsm_levels``
    driven by a parallel encoder of the unwrapped photo, and one SSRPM at the shallowest SRSM level
    whose regions are average-pooled for the deeper ones.
    """

    def __init__(self, cfg: TextureConfig, albedo: AlbedoModel):
        super().__init__()
        self.cfg = cfg
        self.albedo = albedo
        w = cfg.widths
        # The plain ablation sees the same inputs stacked in its one encoder: I_ua (3), the unwrapped photo
        # and its visibility (4), the landmark heatmaps unwrapped (68).
        self.content = nn.ModuleList([conv_in_relu(7 + cfg.landmarks if cfg.plain else 3, w[0])]
                                     + [conv_in_relu(w[i - 1], w[i], 2) for i in range(1, len(w))])
        if not cfg.plain:
            self.style = nn.ModuleList([conv_in_relu(4, w[0])] + [conv_in_relu(w[i - 1], w[i], 2) for i in range(1, len(w))])
            self.ssrpm = SSRPM(w[min(cfg.srsm_levels)], cfg.regions, cfg.landmarks, cfg.kappa_init)
            self.srsm = nn.ModuleDict({str(l): SRSM(w[l]) for l in cfg.srsm_levels})
        self.decoder = nn.ModuleList([conv_in_relu(w[i], w[i - 1]) for i in range(len(w) - 1, 0, -1)])
        self.out = nn.Conv2d(w[0], 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, p_t, image, heatmaps, uv_grid, uv_visibility):
        """p_t (B, K); image (B, 3, H, W) RGB in [0, 1]; heatmaps (B, 68, H, W); uv_grid (B, S, S, 2)
        photo position of each UV pixel in grid_sample's [-1, 1] units; uv_visibility (B, 1, S, S)."""
        i_ua = self.albedo(p_t)
        photo_uv = F.grid_sample(image, uv_grid, mode="bilinear", padding_mode="border", align_corners=False)
        style_in = torch.cat([photo_uv * uv_visibility, uv_visibility], 1)
        if self.cfg.plain:
            heatmaps_uv = F.grid_sample(heatmaps, uv_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            return self._plain(i_ua, torch.cat([i_ua, style_in, heatmaps_uv], 1)), i_ua, None
        x, s, skips, regions = i_ua * 2.0 - 1.0, style_in * 2.0 - 1.0, [], None
        first = min(self.cfg.srsm_levels)
        for level, (c_layer, s_layer) in enumerate(zip(self.content, self.style)):
            x, s = c_layer(x), s_layer(s)
            if str(level) in self.srsm:
                # Level l is S / 2^l on a side; fixed-kernel pooling keeps the ONNX graph static.
                vis = F.avg_pool2d(uv_visibility, 2**level) if level else uv_visibility
                if regions is None:
                    grid = uv_grid.permute(0, 3, 1, 2)
                    grid = (F.avg_pool2d(grid, 2**level) if level else grid).permute(0, 2, 3, 1)
                    regions = self.ssrpm(x, s, heatmaps, image, grid)
                pooled = F.avg_pool2d(regions, 2 ** (level - first)) if level > first else regions
                x = self.srsm[str(level)](x, s, pooled, vis)
            skips.append(x)
        for up, skip in zip(self.decoder, reversed(skips[:-1])):
            # Convolve, then upsample: the same receptive field at a quarter of the cost.
            x = F.interpolate(up(x), size=skip.shape[-2:], mode="bilinear", align_corners=False) + skip
        # A correction of I_ua in logit space: the stream starts as the linear albedo (the output layer
        # starts at zero) and learns what the photo adds, instead of first learning to copy I_ua.
        return self._correct(i_ua, x), i_ua, regions

    def _correct(self, i_ua: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        base = i_ua.clamp(0.01, 0.99)
        return torch.sigmoid(torch.log(base / (1.0 - base)) + self.out(x))

    def _plain(self, i_ua: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
        """The ablation: encode [I_ua, photo, visibility, heatmaps] (B, 75, S, S), decode with no skips,
        correct I_ua the same way."""
        x = stacked * 2.0 - 1.0
        sizes = []
        for layer in self.content:
            sizes.append(x.shape[-2:])
            x = layer(x)
        for up, size in zip(self.decoder, reversed(sizes[1:])):
            x = F.interpolate(up(x), size=size, mode="bilinear", align_corners=False)
        return self._correct(i_ua, x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, 3, S, S) albedo map -> (B, 1, S / 2^L, S / 2^L) real/fake logits per patch."""

    def __init__(self, cfg: TextureConfig):
        super().__init__()
        layers, cin = [], 3
        for i, width in enumerate(cfg.disc_widths):
            layers += [nn.Conv2d(cin, width, 4, 2, 1)]
            if i > 0:
                layers += [nn.InstanceNorm2d(width, affine=True)]
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            cin = width
        layers += [nn.Conv2d(cin, 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, albedo_map: torch.Tensor) -> torch.Tensor:
        return self.net(albedo_map * 2.0 - 1.0)
