"""The U-Net shared by the VoxelMorph displacement estimator and the AdaCS scoring network.

VoxelMorph's layout (Balakrishnan et al. 2019): a 3×3 convolution + LeakyReLU(0.2) per level, max
pooling on the way down, nearest upsampling and skip concatenation on the way up, then a few extra
full-resolution convolutions. With the SPEC defaults ``enc=(16, 32, 32, 32)`` and
``dec=(32, 32, 32, 32, 32, 16, 16)``: four levels down, four up, three at full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBlock", "UNet", "conv_nd"]


def conv_nd(ndim: int) -> type[nn.Module]:
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    return nn.Conv2d if ndim == 2 else nn.Conv3d


class ConvBlock(nn.Module):
    def __init__(self, ndim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_nd(ndim)(in_channels, out_channels, kernel_size=3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class UNet(nn.Module):
    """``(B, in_channels, *spatial) -> (B, dec[-1], *spatial)`` for any spatial size.

    Upsampling goes to the skip's exact size, so inputs need not be multiples of ``2**len(enc)``.
    """

    def __init__(self, ndim: int, in_channels: int, enc: Sequence[int] = (16, 32, 32, 32),
                 dec: Sequence[int] = (32, 32, 32, 32, 32, 16, 16)) -> None:
        super().__init__()
        if len(dec) < len(enc):
            raise ValueError(f"need at least one decoder level per encoder level: enc={enc}, dec={dec}")
        self.ndim = ndim
        self.pool = (nn.MaxPool2d if ndim == 2 else nn.MaxPool3d)(2)
        self.down = nn.ModuleList()
        channels = in_channels
        for features in enc:
            self.down.append(ConvBlock(ndim, channels, features))
            channels = features
        self.up = nn.ModuleList()
        for features, skip in zip(dec[: len(enc)], reversed(enc)):
            self.up.append(ConvBlock(ndim, channels, features))
            channels = features + skip
        self.extra = nn.ModuleList()
        for features in dec[len(enc):]:
            self.extra.append(ConvBlock(ndim, channels, features))
            channels = features
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        for block in self.up:
            x = block(x)
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = torch.cat([x, skip], dim=1)
        for block in self.extra:
            x = block(x)
        return x
