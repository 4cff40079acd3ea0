"""The AdaCS correspondence scoring network ``g_ϕ``: a training-time device only.

It reads the target image alone and predicts a per-voxel score ``S ∈ (0, 1)`` that down-weights the
residual where a correspondence is unreliable (SPEC Eq. 2). It is never saved in, loaded by, or run
on the inference path: ``models.artifact`` stores the displacement estimator alone.
"""

from __future__ import annotations

import torch
from torch import nn

from models.networks.unet import UNet, conv_nd

__all__ = ["ScoringNet"]


class ScoringNet(nn.Module):
    """``(B, 1, *spatial)`` target -> ``(B, 1, *spatial)`` scores in (0, 1).

    Same U-Net shape as the displacement estimator's, one input channel, one sigmoid output.
    """

    def __init__(self, ndim: int, enc: tuple[int, ...] = (16, 32, 32, 32),
                 dec: tuple[int, ...] = (32, 32, 32, 32, 32, 16, 16)) -> None:
        super().__init__()
        self.backbone = UNet(ndim, in_channels=1, enc=enc, dec=dec)
        self.head = conv_nd(ndim)(self.backbone.out_channels, 1, kernel_size=3, padding=1)

    def forward(self, target: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.backbone(target)))
