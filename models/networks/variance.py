"""The variance network of the NLL and β-NLL baselines: a training-time device only.

It reads the target and the warped source and predicts a per-voxel log-variance ``s = log σ²`` of
the residual (SPEC "Baselines"). Like the AdaCS scoring network it lives in training checkpoints
only: ``models.artifact`` stores the displacement estimator alone and never builds this network.
"""

from __future__ import annotations

import torch
from torch import nn

from models.networks.unet import UNet, conv_nd

__all__ = ["LOG_VAR_BOUND", "VarianceNet"]

#: ``|s| < LOG_VAR_BOUND``, i.e. σ² within [4.5e-5, 2.2e4]. The NLL is unbounded below where a residual
#: is exactly 0 (``s → −∞``), and this network sees both images, so it could chase that; a soft bound
#: keeps the weight ``1/(2σ²)`` finite. Residuals of [0, 1] images at realistic noise need |s| < 10.
LOG_VAR_BOUND = 10.0


class VarianceNet(nn.Module):
    """``(target, warped)`` each ``(B, 1, *spatial)`` -> ``s = log σ²`` ``(B, 1, *spatial)``.

    The U-Net of the displacement estimator (same shape), two input channels, one output channel
    ``s = b · tanh(raw / b)`` with ``b = LOG_VAR_BOUND``. The head starts near zero, as the flow head
    does, so training starts from ``σ² ≈ 1`` everywhere: every voxel equally trusted, the NLL's
    gradient on the residual half of Eq. 1's.
    """

    def __init__(self, ndim: int, enc: tuple[int, ...] = (16, 32, 32, 32),
                 dec: tuple[int, ...] = (32, 32, 32, 32, 32, 16, 16), bound: float = LOG_VAR_BOUND) -> None:
        super().__init__()
        self.backbone = UNet(ndim, in_channels=2, enc=enc, dec=dec)
        self.head = conv_nd(ndim)(self.backbone.out_channels, 1, kernel_size=3, padding=1)
        nn.init.normal_(self.head.weight, mean=0.0, std=1e-5)
        nn.init.zeros_(self.head.bias)
        self.bound = bound

    def forward(self, target: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        if target.shape != warped.shape:
            raise ValueError(f"target {tuple(target.shape)} and warped {tuple(warped.shape)} must match")
        raw = self.head(self.backbone(torch.cat([target, warped], dim=1)))
        return self.bound * torch.tanh(raw / self.bound)
