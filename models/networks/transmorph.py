"""TransMorph (Chen et al. 2022): a Swin-transformer encoder and a convolutional decoder.

The backbone maps the concatenated pair ``(B, 2, *spatial)`` to ``(B, head_channels, *spatial)``;
the shared flow head and velocity integration of :mod:`models.networks.estimator` do the rest.
Layout, with ``S = len(depths)`` and ``C = embed_dim``:

- patch embedding: a convolution with kernel = stride = ``patch_size`` to ``C`` channels, LayerNorm;
- Swin stage ``i`` (``0 <= i < S``) at ``1/(patch_size·2^i)`` of the input with ``C·2^i`` channels:
  ``depths[i]`` blocks of window attention (windows shifted by half a window every other block),
  patch merging between stages; each stage's output, layer-normalised, is a skip connection;
- two convolutional skips from the pair itself, at half resolution (2× average pooling, ``C/2``
  channels) and at full resolution (``head_channels``), which the Swin stages cannot provide;
- decoder: from the deepest stage, upsample (linear interpolation) to the next skip, concatenate,
  two ``3^ndim`` convolutions + InstanceNorm + LeakyReLU(0.2); after the ``1/patch_size`` stage,
  one block at half resolution and one at full resolution, both ``head_channels`` wide.

Differences from the paper's network: it has four stages (depths 2, 2, 4, 2), ``C = 96`` and 3D
windows of 5×6×7, and warps with the displacement directly; the defaults here are sized for CPU
training at 128×128 (below), and the field is integrated as a stationary velocity like every
estimator of this package. Swin blocks, patch embedding and patch merging are MONAI's.

Input shapes: any size. The pair is zero-padded at the far end of every axis to a multiple of
``patch_size · 2^(S-1)`` (16 by default; zero is the background of [0, 1] images) and the features
are cropped back, so every skip aligns exactly. A stage grid smaller than the window is padded to
one window (see :class:`SwinStage`).

Defaults (``TransMorphOptions()``): 440,182 parameters in 2D, 712,511 in 3D (VoxelMorph with the
SPEC's sizes: 109,170 and 327,331). Forward + backward of the whole estimator (7-step integration
included), batch of 4 at 128×128, torch 2.13 CPU on 2 shared cores: 0.25 s at best, and 1.3× VoxelMorph
(median ratio of 20 interleaved runs; absolute medians on that loaded machine were 0.5-1.2 s).
For GPUs, scale up e.g. ``embed_dim=96, depths=(2, 2, 4, 2), num_heads=(4, 4, 8, 8)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import PatchEmbed
from monai.networks.nets.swin_unetr import PatchMergingV2, SwinTransformerBlock, compute_mask, get_window_size
from torch import nn

from models.networks.options import TransMorphOptions
from models.networks.unet import conv_nd

__all__ = ["SwinStage", "TransMorphBackbone", "TransMorphOptions"]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1)


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(-1, 1)


def _pad_end(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """Zero-pad ``(B, C, *spatial)`` by ``pad[k]`` at the far end of spatial axis ``k``."""
    return F.pad(x, [p for size in reversed(pad) for p in (0, size)]) if any(pad) else x


def _crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return x[(..., *(slice(0, s) for s in shape))]


class SwinStage(nn.Module):
    """``depth`` Swin blocks at one resolution: ``(B, C, *grid) -> (B, C, *grid)``.

    Even blocks attend within regular windows, odd blocks within windows shifted by half a window
    (Liu et al. 2021). MONAI shrinks a window that is larger than the grid but then reads the
    relative-position table of the full window in the small window's token order, which mislabels
    the offsets; so a grid smaller than the window is zero-padded to one window and cropped after.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window: Sequence[int], mlp_ratio: float) -> None:
        super().__init__()
        self.window = tuple(window)
        self.shift = tuple(w // 2 for w in self.window)
        no_shift = (0,) * len(self.window)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, self.window, self.shift if i % 2 else no_shift,
                                 mlp_ratio=mlp_ratio, qkv_bias=True)
            for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = tuple(x.shape[2:])
        x = _channels_last(_pad_end(x, [max(w - g, 0) for g, w in zip(grid, self.window)]))
        # The shifted-window mask, computed on the grid padded to whole windows, as the blocks pad it.
        window, shift = get_window_size(x.shape[1:-1], self.window, self.shift)
        padded = [math.ceil(g / w) * w for g, w in zip(x.shape[1:-1], window)]
        mask = compute_mask(padded, window, shift, x.device) if any(shift) else None
        for block in self.blocks:
            x = block(x, mask)
        return _crop(_channels_first(x), grid)


class ConvNormAct(nn.Sequential):
    """``3^ndim`` convolution, InstanceNorm (affine; the convolution has no bias it would cancel), LeakyReLU."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int) -> None:
        norm = nn.InstanceNorm2d if ndim == 2 else nn.InstanceNorm3d
        super().__init__(conv_nd(ndim)(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                         norm(out_channels, affine=True), nn.LeakyReLU(0.2))


class DecoderBlock(nn.Module):
    """Upsample ``x`` to ``skip``'s grid, concatenate, two :class:`ConvNormAct` -> ``out_channels``."""

    def __init__(self, ndim: int, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.mode = "bilinear" if ndim == 2 else "trilinear"
        self.convs = nn.Sequential(ConvNormAct(ndim, in_channels + skip_channels, out_channels),
                                   ConvNormAct(ndim, out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class SwinEncoder(nn.Module):
    """``(B, in_channels, *spatial)`` -> one ``(B, C·2^i, *spatial/(patch·2^i))`` skip per stage.

    ``spatial`` must be a multiple of ``patch_size·2^(S-1)`` (the backbone pads to it).
    """

    def __init__(self, ndim: int, in_channels: int, opts: TransMorphOptions) -> None:
        super().__init__()
        window = (opts.window_size,) * ndim
        self.embed = PatchEmbed(opts.patch_size, in_channels, opts.embed_dim, nn.LayerNorm, spatial_dims=ndim)
        dims = [opts.embed_dim * 2**i for i in range(len(opts.depths))]
        self.stages = nn.ModuleList(SwinStage(dim, depth, heads, window, opts.mlp_ratio)
                                    for dim, depth, heads in zip(dims, opts.depths, opts.num_heads))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for dim in dims)
        self.merges = nn.ModuleList(PatchMergingV2(dim, nn.LayerNorm, spatial_dims=ndim) for dim in dims[:-1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed(x)
        skips = []
        for i, (stage, norm) in enumerate(zip(self.stages, self.norms)):
            x = _channels_last(stage(x))
            skips.append(_channels_first(norm(x)))
            if i < len(self.merges):
                x = _channels_first(self.merges[i](x))
        return skips


class TransMorphBackbone(nn.Module):
    """``(B, 2, *spatial)`` pair -> ``(B, head_channels, *spatial)`` features, any ``spatial``."""

    def __init__(self, ndim: int, opts: TransMorphOptions | None = None, in_channels: int = 2) -> None:
        super().__init__()
        opts = opts or TransMorphOptions()
        self.ndim = ndim
        self.multiple = opts.patch_size * 2 ** (len(opts.depths) - 1)
        self.pool = (nn.AvgPool2d if ndim == 2 else nn.AvgPool3d)(2)
        self.encoder = SwinEncoder(ndim, in_channels, opts)
        dims = [opts.embed_dim * 2**i for i in range(len(opts.depths))]
        self.up = nn.ModuleList(DecoderBlock(ndim, dims[i + 1], dims[i], dims[i])
                                for i in reversed(range(len(dims) - 1)))
        half, head = opts.embed_dim // 2, opts.head_channels
        self.skip_half = ConvNormAct(ndim, in_channels, half)
        self.skip_full = ConvNormAct(ndim, in_channels, head)
        self.up_half = DecoderBlock(ndim, dims[0], half, head)
        self.up_full = DecoderBlock(ndim, head, head, head)
        self.out_channels = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape[2:])
        if len(shape) != self.ndim:
            raise ValueError(f"expected a {self.ndim}-D pair (B, 2, *spatial), got shape {tuple(x.shape)}")
        x = _pad_end(x, [-s % self.multiple for s in shape])
        skips = self.encoder(x)
        y = skips[-1]
        for block, skip in zip(self.up, reversed(skips[:-1])):
            y = block(y, skip)
        y = self.up_half(y, self.skip_half(self.pool(x)))
        y = self.up_full(y, self.skip_full(x))
        return _crop(y, shape)
