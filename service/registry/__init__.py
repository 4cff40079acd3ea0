"""The model registry: named models, immutable content-addressed versions, movable stage labels.

Pure functions over a SQLAlchemy ``Session`` and an artifact store; no web framework, no torch
(the API process resolves and validates models without loading the science).

>>> with session_scope(engine) as session:  # doctest: +SKIP
...     v = register_version(session, store, "cardiac", "runs/acdc/model")
...     promote(session, "cardiac", v.version, "production")
...     resolve(session, "cardiac").version          # the production version
"""

from service.registry.artifact_check import ArtifactInfo, check_artifact_dir
from service.registry.delete import delete_model, delete_version
from service.registry.errors import Conflict, Forbidden, InvalidArtifact, InvalidReference, NotFound, RegistryError
from service.registry.refs import LATEST, PRODUCTION, ModelRef, parse_ref
from service.registry.stages import demote, promote, stages_of
from service.registry.versions import (
    check_may_add_version,
    get_model,
    get_version,
    list_models,
    list_versions,
    register_version,
    resolve,
)

__all__ = [
    "ArtifactInfo", "check_artifact_dir", "delete_model", "delete_version", "Conflict", "Forbidden", "InvalidArtifact",
    "InvalidReference", "NotFound", "RegistryError", "LATEST", "PRODUCTION", "ModelRef", "parse_ref", "demote",
    "promote", "stages_of", "check_may_add_version", "get_model", "get_version", "list_models", "list_versions",
    "register_version", "resolve",
]
