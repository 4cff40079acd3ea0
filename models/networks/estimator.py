"""Displacement estimators: a backbone, a flow head and velocity integration.

Every architecture is a backbone producing features at full resolution; the common part turns them
into a stationary velocity, integrates it (scaling and squaring at ``1/int_downsize`` resolution)
and returns the forward and inverse displacements, so the trainer and every loss are
architecture-agnostic. Two kinds of backbone:

- a plain ``nn.Module`` maps the concatenated pair ``(B, 2, *spatial)`` to features
  (VoxelMorph's U-Net, TransMorph);
- a :class:`PairBackbone` reads ``moving`` and ``fixed`` separately and returns
  ``(features, aux_loss)``: extra training terms (DiffuseMorph's denoising loss), ``None`` in
  eval mode. The estimator passes it on as :attr:`Deformation.aux_loss`.

Architecture-specific sizes live in ``EstimatorConfig.options`` and are parsed into a frozen
dataclass per architecture (:mod:`models.networks.options`); the table of architectures and their
builders is :mod:`models.networks.registry`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from models.integrate import VelocityIntegrator, resize_field
from models.networks.unet import conv_nd

__all__ = ["Deformation", "DisplacementEstimator", "EstimatorConfig", "PairBackbone"]


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

    ``aux_loss`` is a scalar: extra training terms an architecture adds to the displacement
    objective, already weighted (e.g. DiffuseMorph's denoising loss times ``diffusion_weight``);
    ``None`` at inference (eval mode) and for architectures without one. The trainer adds it, as
    is, to the loss it backpropagates through the estimator.
    """

    vel: torch.Tensor
    disp: torch.Tensor
    disp_inv: torch.Tensor
    aux_loss: torch.Tensor | None = None


class PairBackbone(nn.Module):
    """A backbone that reads the pair separately and may add a training term.

    Subclasses set ``out_channels`` and implement ``forward(moving, fixed) -> (features, aux_loss)``
    with ``moving``, ``fixed`` ``(B, 1, *spatial)``, ``features`` ``(B, out_channels, *spatial)``
    and ``aux_loss`` a scalar or ``None`` (always ``None`` in eval mode). Random draws (noise,
    timesteps) must come from torch's global RNG, which the trainer seeds.
    """

    out_channels: int

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class DisplacementEstimator(nn.Module):
    """``(moving, fixed)`` each ``(B, 1, *spatial)`` -> :class:`Deformation`.

    ``backbone`` is a plain module of the concatenated pair or a :class:`PairBackbone`.
    """

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
        if isinstance(self.backbone, PairBackbone):
            features, aux_loss = self.backbone(moving, fixed)
        else:
            features, aux_loss = self.backbone(torch.cat([moving, fixed], dim=1)), None
        flow = self.flow(features)
        if self.int_steps == 0:
            return Deformation(vel=flow, disp=flow, disp_inv=-flow, aux_loss=aux_loss)
        vel = resize_field(flow, self.integrator.low_res_shape(shape))
        return Deformation(vel=vel, disp=self.integrator(vel, shape), disp_inv=self.integrator(-vel, shape),
                           aux_loss=aux_loss)
