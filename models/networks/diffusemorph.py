"""DiffuseMorph (Kim, Han & Ye, ECCV 2022): a diffusion network and a deformation network, trained jointly.

Training (``module.training``), per batch, with torch's global RNG (the trainer seeds it):

- draw ``t`` uniformly from ``{0, ..., T-1}`` and ``ε ~ N(0, 1)`` shaped like ``fixed``;
- noise the target: ``y_t = sqrt(ᾱ_t)·fixed + sqrt(1-ᾱ_t)·ε`` with ``ᾱ_t = Π_{s<=t} (1-β_s)`` and
  ``β`` linear from ``beta_start`` to ``beta_end`` over ``T = n_timesteps`` steps (DDPM);
- the diffusion network, a small U-Net whose blocks add a projection of the sinusoidal embedding of
  ``t``, reads ``(moving, y_t)`` and predicts ``ε̂`` from its last features;
- the deformation network, a VoxelMorph U-Net sized by ``EstimatorConfig.enc``/``dec``, reads those
  features with the clean pair ``(moving, fixed)`` and yields the features of the shared flow head;
- the auxiliary loss is ``diffusion_weight · mean((ε - ε̂)²)`` over batch and voxels.

Inference (eval mode) is one pass at ``t = 0`` with the clean target: no noise, no sampling loop,
no auxiliary loss, deterministic. Training also visits ``t = 0``, where ``y_0`` differs from the
clean target only by noise of standard deviation ``sqrt(beta_start)`` (0.001).

Choices, where the paper and its public code differ from this package's needs:

- The schedule defaults (``T = 2000``, ``β`` from 1e-6 to 1e-2) are those of the authors' public
  2D configuration; DDPM's own are ``T = 1000``, 1e-4 to 0.02. Both are options.
- The authors' code feeds the diffusion network the clean fixed image beside ``(moving, y_t)``,
  from which ``ε`` follows without any registration; here it reads ``(moving, y_t)`` only, so
  denoising the target needs to know how the moving image maps onto it.
- Their deformation network reads ``ε̂``; here it reads the diffusion network's last features
  (``features[0]`` channels, a superset of what ``ε̂`` is computed from) and the pair.
- Their objective is ``L_diffusion + λ·L_registration`` (``λ = 2`` in their 2D configuration, with
  NCC). Here the registration objective of the trainer (SPEC Eq. 1/2) keeps weight 1 and the
  diffusion term is scaled by ``diffusion_weight`` (default 1, i.e. their ``λ = 1``); our MSE data
  term is much smaller than ``ε``'s MSE (about 1 at the start), so the denoising loss dominates the
  diffusion network's gradient. Lower ``diffusion_weight`` to shift the balance.

Defaults (``DiffuseMorphOptions()``, the deformation U-Net at the SPEC's VoxelMorph sizes): 157,539
parameters in 2D (46,065 in the diffusion network), 459,508 in 3D (125,265). Forward + backward of
the whole estimator in train mode (aux loss included), batch of 4 at 128×128, torch 2.13 CPU on 2
shared cores: 0.42 s at best, and 1.8× VoxelMorph (median ratio of 20 interleaved runs). Any input
size works (the U-Nets upsample to each skip's exact size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.estimator import PairBackbone
from models.networks.options import DiffuseMorphOptions
from models.networks.unet import UNet, conv_nd

__all__ = ["DiffuseMorphBackbone", "DiffuseMorphOptions", "DiffusionUNet", "alpha_bar_linear", "noise_target",
           "timestep_embedding"]


def alpha_bar_linear(n_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """``ᾱ_t = Π_{s<=t} (1 - β_s)`` for ``t = 0..T-1``, ``β`` linear; ``(T,)`` float64.

    >>> alpha_bar_linear(2, 0.1, 0.5).tolist()
    [0.9, 0.45]
    """
    betas = torch.linspace(beta_start, beta_end, n_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def noise_target(fixed: torch.Tensor, alpha_bar_t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``y_t = sqrt(ᾱ_t)·fixed + sqrt(1-ᾱ_t)·noise``; ``fixed``, ``noise`` ``(B, 1, *spatial)``, ``ᾱ_t`` ``(B,)``."""
    a = alpha_bar_t.to(fixed.dtype).view(-1, *([1] * (fixed.dim() - 1)))
    return a.sqrt() * fixed + (1.0 - a).sqrt() * noise


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of timesteps ``t`` ``(B,)`` -> ``(B, dim)``: ``[sin(t·ω_k), cos(t·ω_k)]``.

    ``ω_k = 10000^(-k/(dim/2))`` for ``k < dim/2`` (Vaswani et al. 2017, as in DDPM).
    """
    half = dim // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class TimeConvBlock(nn.Module):
    """``3^ndim`` convolution, plus a projection of the time embedding per channel, LeakyReLU(0.2)."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int, time_dim: int) -> None:
        super().__init__()
        self.conv = conv_nd(ndim)(in_channels, out_channels, kernel_size=3, padding=1)
        self.time = nn.Linear(time_dim, out_channels)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        shift = self.time(emb)  # (B, out_channels), broadcast over space
        return self.act(h + shift.view(*shift.shape, *([1] * (h.dim() - 2))))


class DiffusionUNet(nn.Module):
    """``(moving, y_t)`` each ``(B, 1, *spatial)`` and ``t`` ``(B,)`` -> ``(B, features[0], *spatial)``.

    One :class:`TimeConvBlock` per level down (max pooling between), ``features[-1]`` at the bottom,
    one per level up (nearest upsampling to the skip's exact size, concatenation). ``eps`` maps the
    returned features to ``ε̂`` ``(B, 1, *spatial)``.
    """

    def __init__(self, ndim: int, features: Sequence[int], time_dim: int) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(),
                                      nn.Linear(time_dim, time_dim), nn.SiLU())
        self.pool = (nn.MaxPool2d if ndim == 2 else nn.MaxPool3d)(2)
        channels, self.down = 2, nn.ModuleList()
        for width in features:
            self.down.append(TimeConvBlock(ndim, channels, width, time_dim))
            channels = width
        self.up = nn.ModuleList()
        for width in reversed(features[:-1]):
            self.up.append(TimeConvBlock(ndim, channels + width, width, time_dim))
            channels = width
        self.eps = conv_nd(ndim)(channels, 1, kernel_size=3, padding=1)
        self.out_channels = channels

    def forward(self, moving: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.time_dim))
        x, skips = torch.cat([moving, noisy], dim=1), []
        for i, block in enumerate(self.down):
            if i:
                skips.append(x)
                x = self.pool(x)
            x = block(x, emb)
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1), emb)
        return x


class DiffuseMorphBackbone(PairBackbone):
    """``(moving, fixed)`` -> ``(features (B, dec[-1], *spatial), aux_loss or None)``.

    ``aux_loss`` is ``diffusion_weight · mean((ε - ε̂)²)`` in train mode and ``None`` in eval mode.
    """

    def __init__(self, ndim: int, opts: DiffuseMorphOptions | None = None,
                 enc: Sequence[int] = (16, 32, 32, 32), dec: Sequence[int] = (32, 32, 32, 32, 32, 16, 16)) -> None:
        super().__init__()
        self.opts = opts or DiffuseMorphOptions()
        self.diffusion = DiffusionUNet(ndim, self.opts.features, self.opts.time_dim)
        self.deformation = UNet(ndim, in_channels=self.diffusion.out_channels + 2, enc=enc, dec=dec)
        self.out_channels = self.deformation.out_channels
        # Not persistent: rebuilt from the options, so the artifact holds learned weights only.
        alpha_bar = alpha_bar_linear(self.opts.n_timesteps, self.opts.beta_start, self.opts.beta_end)
        self.register_buffer("alpha_bar", alpha_bar.float(), persistent=False)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = fixed.shape[0]
        if not self.training:
            t = torch.zeros(batch, dtype=torch.long, device=fixed.device)
            hidden = self.diffusion(moving, fixed, t)
            return self.deformation(torch.cat([hidden, moving, fixed], dim=1)), None
        t = torch.randint(0, self.opts.n_timesteps, (batch,), device=fixed.device)
        noise = torch.randn_like(fixed)
        hidden = self.diffusion(moving, noise_target(fixed, self.alpha_bar[t], noise), t)
        aux_loss = self.opts.diffusion_weight * F.mse_loss(self.diffusion.eps(hidden), noise)
        return self.deformation(torch.cat([hidden, moving, fixed], dim=1)), aux_loss
