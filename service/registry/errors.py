"""Typed registry errors. Each message says what is wrong and what to do; ``http_status`` is the
answer the API gives for it, so routes need no table of their own (as ``models.io.errors`` does)."""

from __future__ import annotations

__all__ = ["RegistryError", "NotFound", "Forbidden", "Conflict", "InvalidArtifact", "InvalidReference"]


class RegistryError(Exception):
    http_status = 400


class NotFound(RegistryError, LookupError):
    """No such model, version or stage label."""

    http_status = 404


class Forbidden(RegistryError):
    """The caller may see the model but not change it (the shared catalogue needs ``admin``)."""

    http_status = 403


class Conflict(RegistryError):
    """The request clashes with the registry's state (a labelled version, a concurrent write)."""

    http_status = 409


class InvalidArtifact(RegistryError, ValueError):
    """The directory is not a registrable model artifact (extra files, scoring tensors, bad header)."""

    http_status = 422


class InvalidReference(RegistryError, ValueError):
    """A model name, stage or ``name[:version|@stage]`` reference that cannot be parsed."""

    http_status = 422
