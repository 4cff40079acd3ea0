"""The artifact store: immutable, content-addressed objects (inputs, outputs, checkpoints, model
weights) and per-job scratch folders, shared by the API process and the worker."""

from service.storage.atomic import TooLarge
from service.storage.base import ArtifactStore, ObjectNotFound, check_sha
from service.storage.local import LocalArtifactStore

__all__ = ["ArtifactStore", "LocalArtifactStore", "ObjectNotFound", "TooLarge", "check_sha"]
