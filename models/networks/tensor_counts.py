"""How many tensors each architecture's state dict holds, from its config alone, without torch.

The registry refuses an artifact whose weights and ``config.json`` do not belong together, and it
checks that in the API process, which never imports torch; so the count of every architecture is
stated here, next to the networks, from the estimator section of ``config.json`` (an
``EstimatorConfig.to_dict()``; options left out take the defaults of
:mod:`models.networks.options`). ``tests/service/test_state_boundaries.py`` checks every entry
against the network :func:`models.networks.registry.build_estimator` builds, so a new
architecture, or a changed one, cannot be forgotten here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from models.networks.options import DiffuseMorphOptions, PyramidOptions, TransMorphOptions

__all__ = ["TENSOR_COUNTS", "tensor_count"]

Estimator = Mapping[str, Any]  # the estimator section of config.json


def _options(estimator: Estimator) -> Mapping[str, Any]:
    options = estimator.get("options") or {}
    if not isinstance(options, Mapping):
        raise ValueError(f"'options' must be an object, got {options!r}")
    return options


def _voxelmorph(estimator: Estimator) -> int:
    # One convolution (weight + bias) per encoder and decoder level, plus the flow head's pair.
    return 2 * (len(estimator["enc"]) + len(estimator["dec"])) + 2


def _transmorph(estimator: Estimator) -> int:
    # Per Swin block 14 tensors (norms, attention with its relative-position table and index, MLP),
    # 11 per stage (patch merging, skip convolutions, decoder block), 15 for stem, head and flow.
    depths = _options(estimator).get("depths", TransMorphOptions.depths)
    return 14 * sum(depths) + 11 * len(depths) + 15


def _diffusemorph(estimator: Estimator) -> int:
    # The VoxelMorph-sized deformation U-Net and flow head, plus 8 tensors per diffusion U-Net level
    # and 2 for its noise head (the beta schedule is recomputed, not stored).
    features = _options(estimator).get("features", DiffuseMorphOptions.features)
    return _voxelmorph(estimator) + 8 * len(features) + 2


def _pyramid(estimator: Estimator) -> int:
    # Per level: two stem, one strided and two decoder convolutions and the flow head (12 tensors),
    # 4 per residual block, and 2 for the convolution merging the coarser level's features (all but
    # the coarsest level).
    options = _options(estimator)
    features, blocks = options.get("features", PyramidOptions.features), options.get("blocks", PyramidOptions.blocks)
    if not isinstance(features, (list, tuple)) or not isinstance(blocks, int):
        raise ValueError(f"pyramid options need a list 'features' and an integer 'blocks', got {features!r} and "
                         f"{blocks!r}")
    return len(features) * (12 + 4 * blocks) + 2 * (len(features) - 1)


#: Architecture -> number of tensors in its state dict, from the estimator section of config.json.
TENSOR_COUNTS: dict[str, Callable[[Estimator], int]] = {
    "voxelmorph": _voxelmorph, "transmorph": _transmorph, "diffusemorph": _diffusemorph, "pyramid": _pyramid}


def tensor_count(estimator: Estimator) -> int:
    """How many tensors the estimator described by ``estimator`` (config.json's section) holds.

    Raises ``KeyError`` naming a missing key, ``ValueError`` for an unknown architecture or options
    of the wrong type, ``TypeError`` for sizes that are not lists.
    """
    arch = estimator["arch"]
    if arch not in TENSOR_COUNTS:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(TENSOR_COUNTS)}")
    return TENSOR_COUNTS[arch](estimator)
