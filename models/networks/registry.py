"""The architecture table: architecture name -> builder of its displacement estimator.

The trainer, the artifact loader and the CLI see architectures only through :data:`ARCHITECTURES`,
:func:`build_estimator` and :func:`resolve_options`. The table sits apart from
:mod:`models.networks.estimator` (the common part every architecture imports: its config,
:class:`~models.networks.estimator.Deformation`, the flow head) because a builder has to import its
architecture's module: with the table in the base module, the base and DiffuseMorph's and the
pyramid's modules imported each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace

from models.networks.diffusemorph import DiffuseMorphBackbone
from models.networks.estimator import DisplacementEstimator, EstimatorConfig
from models.networks.options import (
    ARCHITECTURE_OPTIONS,
    DiffuseMorphOptions,
    PyramidOptions,
    TransMorphOptions,
    parse_options,
)
from models.networks.pyramid import PyramidEstimator
from models.networks.unet import UNet

__all__ = ["ARCHITECTURES", "build_estimator", "resolve_options"]


def resolve_options(config: EstimatorConfig) -> EstimatorConfig:
    """``config`` with every option of its architecture spelled out (defaults filled in, JSON types).

    Storing this in ``config.json`` makes an artifact rebuild the same network even if a default
    changes later, and lets tools without torch (the registry) read its sizes.
    """
    kind = ARCHITECTURE_OPTIONS.get(config.arch)
    if kind is None:
        return config
    options = asdict(parse_options(kind, config.arch, config.options))
    return replace(config, options={k: list(v) if isinstance(v, tuple) else v for k, v in options.items()})


def _voxelmorph(config: EstimatorConfig) -> DisplacementEstimator:
    if config.options:
        raise ValueError(f"voxelmorph takes no options (its sizes are enc/dec), got {sorted(config.options)}")
    backbone = UNet(config.ndim, in_channels=2, enc=config.enc, dec=config.dec)
    return DisplacementEstimator(backbone, config.ndim, config.int_steps, config.int_downsize)


def _transmorph(config: EstimatorConfig) -> DisplacementEstimator:
    """TransMorph; ``enc``/``dec`` are not used (they size only the AdaCS scoring network)."""
    # Imported here, not at the top: TransMorph pulls in MONAI, which is slow to import.
    from models.networks.transmorph import TransMorphBackbone

    backbone = TransMorphBackbone(config.ndim, parse_options(TransMorphOptions, config.arch, config.options))
    return DisplacementEstimator(backbone, config.ndim, config.int_steps, config.int_downsize)


def _diffusemorph(config: EstimatorConfig) -> DisplacementEstimator:
    """DiffuseMorph; ``enc``/``dec`` size its deformation network (a VoxelMorph U-Net)."""
    options = parse_options(DiffuseMorphOptions, config.arch, config.options)
    backbone = DiffuseMorphBackbone(config.ndim, options, config.enc, config.dec)
    return DisplacementEstimator(backbone, config.ndim, config.int_steps, config.int_downsize)


def _pyramid(config: EstimatorConfig) -> DisplacementEstimator:
    """Laplacian-pyramid (LapIRN-like) estimator; ``enc``/``dec`` are not used (they size only the scoring network).

    Not a :class:`DisplacementEstimator` subclass (it has a flow head per level, not one on a
    backbone) but the same interface: ``forward(moving, fixed) -> Deformation``, ``int_steps``,
    ``integrator``.
    """
    return PyramidEstimator(config.ndim, parse_options(PyramidOptions, config.arch, config.options),
                            config.int_steps, config.int_downsize)


#: Architecture name -> builder. The trainer and the artifact loader only see this table.
ARCHITECTURES: dict[str, Callable[[EstimatorConfig], DisplacementEstimator]] = {
    "voxelmorph": _voxelmorph, "transmorph": _transmorph, "diffusemorph": _diffusemorph, "pyramid": _pyramid}


def build_estimator(config: EstimatorConfig) -> DisplacementEstimator:
    """The untrained estimator ``config`` describes; ValueError for an unknown architecture or option."""
    try:
        builder = ARCHITECTURES[config.arch]
    except KeyError:
        raise ValueError(f"unknown architecture {config.arch!r}; known: {sorted(ARCHITECTURES)}") from None
    return builder(config)
