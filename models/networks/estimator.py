"""Displacement estimators: a backbone, a flow head and velocity integration.

Every architecture (VoxelMorph now; TransMorph and DiffuseMorph plug in the same way) is a
backbone mapping the concatenated ``(moving, fixed)`` pair to features at full resolution. The
common part turns those features into a stationary velocity, integrates it (scaling and squaring at
``1/int_downsize`` resolution) and returns the forward and inverse displacements, so the trainer
and every loss are architecture-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from models.integrate import VelocityIntegrator, resize_field
from models.networks.unet import UNet, conv_nd

__all__ = ["Deformation", "DisplacementEstimator", "EstimatorConfig", "build_estimator", "ARCHITECTURES"]


@dataclass(frozen=True)
class EstimatorConfig:
    """Everything needed to rebuild an estimator; stored in the artifact's ``config.json``."""

    arch: str = "voxelmorph"
    ndim: int = 2
    enc: tuple[int, ...] = (16, 32, 32, 32)
    dec: tuple[int, ...] = (32, 32, 32, 32, 32, 16, 16)
    int_steps: int = 7
    int_downsize: int = 2
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["enc"], out["dec"] = list(self.enc), list(self.dec)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> EstimatorConfig:
        data = dict(data)
        data["enc"], data["dec"] = tuple(data["enc"]), tuple(data["dec"])
        return cls(**data)


@dataclass
class Deformation:
    """What an estimator predicts for a batch, all ``(B, ndim, *spatial)`` in voxels.

    ``vel`` is the velocity at integration resolution (what the smoothness term ``R(u)`` reads);
    ``disp`` pulls ``moving`` onto the ``fixed`` grid and ``disp_inv`` pulls ``fixed`` onto the
    ``moving`` grid (integrated from ``-vel``; the second direction of bidirectional training).
    """

    vel: torch.Tensor
    disp: torch.Tensor
    disp_inv: torch.Tensor


class DisplacementEstimator(nn.Module):
    """``(moving, fixed)`` each ``(B, 1, *spatial)`` -> :class:`Deformation`."""

    def __init__(self, backbone: nn.Module, ndim: int, int_steps: int = 7, int_downsize: int = 2) -> None:
        super().__init__()
        self.backbone = backbone
        self.flow = conv_nd(ndim)(backbone.out_channels, ndim, kernel_size=3, padding=1)
        # Near-zero start: the first predicted field is (almost) the identity (SPEC, "Networks").
        nn.init.normal_(self.flow.weight, mean=0.0, std=1e-5)
        nn.init.zeros_(self.flow.bias)
        self.int_steps = int_steps
        self.integrator = VelocityIntegrator(int_steps, int_downsize if int_steps > 0 else 1)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> Deformation:
        if moving.shape != fixed.shape:
            raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must match")
        shape = tuple(fixed.shape[2:])
        flow = self.flow(self.backbone(torch.cat([moving, fixed], dim=1)))
        if self.int_steps == 0:
            return Deformation(vel=flow, disp=flow, disp_inv=-flow)
        vel = resize_field(flow, self.integrator.low_res_shape(shape))
        return Deformation(vel=vel, disp=self.integrator(vel, shape), disp_inv=self.integrator(-vel, shape))


def _voxelmorph(config: EstimatorConfig) -> DisplacementEstimator:
    backbone = UNet(config.ndim, in_channels=2, enc=config.enc, dec=config.dec)
    return DisplacementEstimator(backbone, config.ndim, config.int_steps, config.int_downsize)


#: Architecture name -> builder. The trainer and the artifact loader only see this table.
ARCHITECTURES: dict[str, Callable[[EstimatorConfig], DisplacementEstimator]] = {"voxelmorph": _voxelmorph}


def build_estimator(config: EstimatorConfig) -> DisplacementEstimator:
    try:
        builder = ARCHITECTURES[config.arch]
    except KeyError:
        raise ValueError(f"unknown architecture {config.arch!r}; known: {sorted(ARCHITECTURES)}") from None
    return builder(config)
