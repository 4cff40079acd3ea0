"""Models and their versions: register, look up, resolve a reference, delete.

Pure functions over a SQLAlchemy ``Session`` and an artifact store: they flush but never commit,
so the caller's transaction (``session_scope``) decides. On PostgreSQL the model row is locked
while a version number is allocated; on SQLite the database write lock serialises writers. A race
that still slips through surfaces as :class:`Conflict` (roll back and retry).

Lookups take an optional ``viewer`` (:class:`service.access.Principal`): a model the viewer may not
read (another key's own model) is reported exactly like a missing one, and lists of "registered
models" in error messages name only what the viewer may read. Without a viewer (the CLI, the
operator's scripts) every model is visible.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.access import Principal, may_add_version, may_see_model, models_visible_to
from service.db.models import Job, Model, ModelVersion, StageAssignment
from service.registry.artifact_check import check_artifact_dir
from service.registry.errors import Conflict, Forbidden, NotFound
from service.registry.refs import ModelRef, check_name, parse_ref
from service.storage.base import ArtifactStore

__all__ = ["register_version", "check_may_add_version", "get_model", "get_version", "list_models", "list_versions",
           "resolve"]


def _known(session: Session, viewer: Principal | None) -> str:
    query = select(Model.name).order_by(Model.name).limit(11)
    names = session.scalars(query if viewer is None else query.where(models_visible_to(viewer))).all()
    listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return f"registered models: {listed}" if names else "the registry is empty"


def get_model(session: Session, name: str, *, lock: bool = False, viewer: Principal | None = None) -> Model:
    """The model called ``name``; :class:`NotFound` lists the registered ones (that ``viewer`` may read)."""
    query = select(Model).where(Model.name == check_name(name))
    model = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if model is None or (viewer is not None and not may_see_model(viewer, model)):
        raise NotFound(f"no model named {name!r}; {_known(session, viewer)}")
    return model


def list_models(session: Session, viewer: Principal | None = None) -> list[Model]:
    query = select(Model).order_by(Model.name)
    return list(session.scalars(query if viewer is None else query.where(models_visible_to(viewer))))


def list_versions(session: Session, name: str, viewer: Principal | None = None) -> list[ModelVersion]:
    """The versions of ``name``, oldest first."""
    return list(get_model(session, name, viewer=viewer).versions)


def get_version(session: Session, name: str, version: int, viewer: Principal | None = None) -> ModelVersion:
    model = get_model(session, name, viewer=viewer)
    found = session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                                       ModelVersion.version == version)).one_or_none()
    if found is None:
        have = [v.version for v in model.versions]
        raise NotFound(f"model {name!r} has no version {version}; its versions are {have or 'none yet'}")
    return found


def resolve(session: Session, ref: str | ModelRef, viewer: Principal | None = None) -> ModelVersion:
    """The version a reference names: ``name`` -> its production version, ``name:3``, ``name:latest``,
    ``name@stage``."""
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    if ref.version is not None:
        return get_version(session, ref.name, ref.version, viewer)
    model = get_model(session, ref.name, viewer=viewer)
    if ref.stage is None:
        if not model.versions:
            raise NotFound(f"model {ref.name!r} has no versions yet; register one first")
        return model.versions[-1]
    assignment = session.scalars(select(StageAssignment).where(StageAssignment.model_id == model.id,
                                                               StageAssignment.stage == ref.stage)).one_or_none()
    if assignment is None:
        have = [v.version for v in model.versions]
        if not have:
            raise NotFound(f"model {ref.name!r} has no versions yet; register one first")
        raise NotFound(f"model {ref.name!r} has no version labelled {ref.stage!r}: promote one of its versions "
                       f"{have} to {ref.stage!r}, or ask for one version as '{ref.name}:N' or '{ref.name}:latest'")
    return get_version(session, ref.name, assignment.version)


def _model_for_update(session: Session, name: str, owner: Principal | None, shared: bool) -> Model:
    """The model to add a version to, created (owned by ``owner``, or shared) on its first version."""
    try:
        model = get_model(session, name, lock=True)
    except NotFound:
        model = Model(name=name, owner_key_id=None if shared or owner is None else owner.key_id)
        session.add(model)
        _flush(session, name)
        return model
    check_may_add_version(model, owner)
    return model


def check_may_add_version(model: Model, owner: Principal | None) -> None:
    """Refuse a version of a model that is not ``owner``'s (another key's, or the shared catalogue).

    Another key's model is named only as "taken" (its owner stays private); the shared catalogue
    answers 403, since every key can see it.
    """
    if owner is None or may_add_version(owner, model):
        return
    if model.owner_key_id is None:
        raise Forbidden(f"model {model.name!r} belongs to the shared catalogue: only a key with the 'admin' scope "
                        "may add versions to it; choose another model name")
    raise Conflict(f"the model name {model.name!r} is taken; choose another model name")


def _flush(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"model {name!r} was changed by another request at the same moment; "
                       "roll back and retry") from None


def register_version(session: Session, store: ArtifactStore, name: str, directory: str | Path, *,
                     source_job_id: str | None = None, owner: Principal | None = None,
                     shared: bool = False) -> ModelVersion:
    """Store the artifact in ``directory`` immutably and record it as the next version of ``name``.

    The directory is checked first (:class:`InvalidArtifact`). Registering content identical to an
    existing version of the same model returns that version, so a redelivered training task does
    not register its model twice. The model is created on its first version, owned by ``owner``
    (``shared``, or no owner: the shared catalogue); an existing model takes versions only from its
    owner or an admin (:func:`check_may_add_version`).
    """
    check_name(name)
    if source_job_id is not None and session.get(Job, source_job_id) is None:
        raise NotFound(f"no job {source_job_id!r}: source_job_id must name the training job that made the model")
    info = check_artifact_dir(directory)
    sha = store.put_dir(directory)  # objects first: a row never points at a missing artifact
    model = _model_for_update(session, name, owner, shared)
    same = session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                                      ModelVersion.sha256 == sha)).first()
    if same is not None:
        return same
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
    version = ModelVersion(model=model, version=(latest or 0) + 1, sha256=sha, storage_key=store.key_of(sha),
                           card=info.card, source_job_id=source_job_id,
                           owner_key_id=owner.key_id if owner is not None else None)
    session.add(version)
    _flush(session, name)
    return version
