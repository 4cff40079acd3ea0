"""The options of each architecture (``EstimatorConfig.options``), without torch.

Each architecture with sizes beyond ``enc``/``dec`` parses its options into a frozen dataclass
here; unknown keys are an error, not silently ignored. They live apart from the networks so that
tools without torch (the registry's artifact check in the API process, see
:mod:`models.networks.tensor_counts`) read the same defaults the networks are built with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["ARCHITECTURE_OPTIONS", "DiffuseMorphOptions", "PyramidOptions", "TransMorphOptions", "parse_options"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TransMorphOptions:
    """``EstimatorConfig.options`` of ``transmorph``; lists (from JSON) are accepted for tuples."""

    embed_dim: int = 24  # C: channels of the first Swin stage, doubled at every stage
    depths: Sequence[int] = (2, 2, 2)  # Swin blocks per stage
    num_heads: Sequence[int] = (2, 4, 8)  # attention heads per stage (head width C·2^i / heads = 12)
    window_size: int = 4  # attention window side, in tokens, on every axis
    patch_size: int = 4  # side of the patches embedded as tokens
    mlp_ratio: float = 4.0  # width of the blocks' MLP relative to the stage's channels
    head_channels: int = 16  # channels of the two full- and half-resolution decoder blocks

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "num_heads", tuple(self.num_heads))
        if not self.depths or len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} need one entry per stage")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise ValueError(f"stage {i} has {self.embed_dim * 2**i} channels, not divisible by {heads} heads")
        if self.patch_size < 2 or self.window_size < 1 or self.embed_dim < 2:
            raise ValueError(f"need patch_size >= 2, window_size >= 1, embed_dim >= 2; got {self.patch_size}, "
                             f"{self.window_size}, {self.embed_dim}")


@dataclass(frozen=True)
class DiffuseMorphOptions:
    """``EstimatorConfig.options`` of ``diffusemorph``; lists (from JSON) are accepted for tuples."""

    n_timesteps: int = 2000  # T
    beta_start: float = 1e-6  # β_0 of the linear schedule
    beta_end: float = 1e-2  # β_{T-1}
    diffusion_weight: float = 1.0  # weight of mean((ε - ε̂)²) in Deformation.aux_loss
    features: Sequence[int] = (16, 32, 32)  # diffusion U-Net: channels per level, the last is the bottleneck
    time_dim: int = 32  # width of the timestep embedding

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        if self.n_timesteps < 1 or not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(f"need n_timesteps >= 1 and 0 < beta_start <= beta_end < 1; got {self.n_timesteps}, "
                             f"{self.beta_start}, {self.beta_end}")
        if self.diffusion_weight < 0 or not self.features or self.time_dim < 2 or self.time_dim % 2:
            raise ValueError(f"need diffusion_weight >= 0, at least one feature level and an even time_dim >= 2; "
                             f"got {self.diffusion_weight}, {self.features}, {self.time_dim}")


@dataclass(frozen=True)
class PyramidOptions:
    """``EstimatorConfig.options`` of ``pyramid``; lists (from JSON) are accepted for tuples."""

    features: Sequence[int] = (32, 32, 16)  # width of each level's network, coarsest first; one entry per level
    blocks: int = 2  # residual blocks at each level's bottleneck (half the level's resolution)
    deep_supervision: float = 0.0  # weight of the coarse levels' own data terms in Deformation.aux_loss

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        if not self.features or not all(_is_int(w) and w >= 1 for w in self.features):
            raise ValueError(f"features needs one positive integer width per level, got {self.features}")
        if not _is_int(self.blocks) or self.blocks < 0 or self.deep_supervision < 0:
            raise ValueError(f"need blocks >= 0 and deep_supervision >= 0; got {self.blocks}, "
                             f"{self.deep_supervision}")


#: Architecture name -> its options dataclass (None: sized by ``enc``/``dec`` alone, no options).
ARCHITECTURE_OPTIONS: dict[str, type | None] = {
    "voxelmorph": None, "transmorph": TransMorphOptions, "diffusemorph": DiffuseMorphOptions,
    "pyramid": PyramidOptions}


def parse_options(kind: type, arch: str, options: Mapping[str, Any]) -> Any:
    """``options`` as the architecture's options dataclass ``kind``; unknown keys are a ValueError."""
    known = [f.name for f in fields(kind)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown options {unknown} for architecture {arch!r}; known: {known}")
    return kind(**options)
