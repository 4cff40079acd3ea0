"""What may enter the registry: a displacement estimator's artifact directory and nothing else.

The scoring network is a training-time device; it must never reach the inference path
(DESIGN "Registry"). So a directory is refused unless it holds exactly ``config.json``,
``model.safetensors`` and ``card.json``, its weights name no scoring-network tensor, and it holds
exactly as many tensors as the estimator its config describes. Only the safetensors header is
read: the API process checks an artifact without importing torch. How many tensors an architecture
has is network knowledge, stated by :mod:`models.networks.tensor_counts`; this module only checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.registry.errors import InvalidArtifact
from service.registry.safetensors_header import read_safetensors_header

__all__ = ["ARTIFACT_FORMAT", "ARTIFACT_FILES", "ArtifactInfo", "check_artifact_dir", "expected_tensor_count"]

# Mirrors models.artifact.ARTIFACT_FORMAT and its file names (that module imports torch; a test
# checks that the two agree).
ARTIFACT_FORMAT = 1
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "card.json"
ARTIFACT_FILES = frozenset({CONFIG, WEIGHTS, CARD})
_SCORING_PREFIXES = ("scorer", "scoring", "score_net")


@dataclass(frozen=True)
class ArtifactInfo:
    config: dict[str, Any]
    card: dict[str, Any]
    tensor_names: tuple[str, ...]


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArtifact(f"{path.name} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise InvalidArtifact(f"{path.name} must hold a JSON object, not {type(data).__name__}")
    return data


def expected_tensor_count(config: dict[str, Any]) -> int:
    """How many tensors the estimator described by ``config.json`` has (``n_tensors`` if declared)."""
    if "n_tensors" in config:
        if not isinstance(config["n_tensors"], int):
            raise InvalidArtifact(f"{CONFIG}: 'n_tensors' must be an integer, got {config['n_tensors']!r}")
        return config["n_tensors"]
    estimator = config.get("estimator")
    if not isinstance(estimator, dict) or "arch" not in estimator:
        raise InvalidArtifact(f"{CONFIG} has no 'estimator' section with an 'arch'")
    # Imported here: importing the state layer loads nothing from models/ (tests/service/
    # test_state_boundaries.py); the module is torch-free, so the API process may call this.
    from models.networks.tensor_counts import tensor_count

    try:
        return tensor_count(estimator)
    except KeyError as error:
        raise InvalidArtifact(f"{CONFIG}: the estimator section lacks {error.args[0]!r}") from None
    except (TypeError, ValueError) as error:
        raise InvalidArtifact(f"{CONFIG}: {error}") from None


def _check_files(directory: Path) -> None:
    if not directory.is_dir():
        raise InvalidArtifact(f"{directory} is not a directory; register the folder a training wrote "
                              f"(holding {', '.join(sorted(ARTIFACT_FILES))})")
    present = {p.name for p in directory.iterdir()}
    extra, missing = sorted(present - ARTIFACT_FILES), sorted(ARTIFACT_FILES - present)
    if extra:
        raise InvalidArtifact(f"{directory} holds {extra} besides the artifact: a model version is exactly "
                              f"{sorted(ARTIFACT_FILES)} (the scoring network and checkpoints stay out); "
                              "copy those three files to a folder of their own and register that")
    if missing:
        raise InvalidArtifact(f"{directory} lacks {missing}; a model version needs {sorted(ARTIFACT_FILES)}")
    for name in sorted(present):
        if (directory / name).is_symlink() or not (directory / name).is_file():
            raise InvalidArtifact(f"{directory / name} must be a regular file, not a link or a folder")


def _is_scoring(key: str) -> bool:
    return any(part.startswith(_SCORING_PREFIXES) for part in key.split("."))


def check_artifact_dir(directory: str | Path) -> ArtifactInfo:
    """Validate a model artifact directory from its files' contents; raise :class:`InvalidArtifact`."""
    directory = Path(directory)
    _check_files(directory)
    config, card = _json_object(directory / CONFIG), _json_object(directory / CARD)
    if config.get("format") != ARTIFACT_FORMAT:
        raise InvalidArtifact(f"{CONFIG}: artifact format {config.get('format')!r}, expected {ARTIFACT_FORMAT}; "
                              "re-export the model with this version of adacs")
    try:
        header = read_safetensors_header(directory / WEIGHTS)
    except ValueError as error:
        raise InvalidArtifact(str(error)) from None
    scoring = sorted(k for k in header.tensors if _is_scoring(k))
    if scoring:
        raise InvalidArtifact(f"{WEIGHTS} holds scoring-network tensors ({', '.join(scoring[:3])}"
                              f"{', ...' if len(scoring) > 3 else ''}); only the displacement estimator may be "
                              "registered: save it with models.artifact.save_artifact")
    expected = expected_tensor_count(config)
    if len(header.tensors) != expected:
        raise InvalidArtifact(f"{WEIGHTS} holds {len(header.tensors)} tensors but the estimator in {CONFIG} "
                              f"has {expected}: the weights and the config do not belong together")
    arch, estimator = header.metadata.get("arch"), config.get("estimator")
    config_arch = estimator.get("arch") if isinstance(estimator, dict) else None
    if arch is not None and arch != config_arch:
        raise InvalidArtifact(f"{WEIGHTS} was saved for architecture {arch!r} but {CONFIG} describes {config_arch!r}")
    return ArtifactInfo(config, card, tuple(sorted(header.tensors)))
