"""The names the API accepts for a training job's architecture and method.

The API process validates a job before queueing it but must not import torch, so it cannot read
``models.networks.registry.ARCHITECTURES`` or ``models.objectives.METHODS`` themselves; these
tuples repeat their keys, and ``tests/test_catalog.py`` fails the moment the two disagree.
"""

from __future__ import annotations

__all__ = ["ARCHITECTURE_NAMES", "METHOD_NAMES"]

ARCHITECTURE_NAMES: tuple[str, ...] = ("voxelmorph", "transmorph", "diffusemorph", "pyramid")
METHOD_NAMES: tuple[str, ...] = ("none", "adacs", "nll", "beta-nll", "adareg", "adaframe", "adacs-scs-only",
                                 "adacs-no-tv")
