"""Deleting versions and models, and the stored objects only they used.

Objects are content-addressed and shared: two versions (of any models) with the same bytes share
a manifest, and different versions share files (the same ``config.json``). So an object is removed
only when no remaining version references it, and only after the transaction commits: a rolled
back delete leaves every file in place.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from service.db.models import Model, ModelVersion
from service.registry.errors import Conflict
from service.registry.stages import stages_of
from service.registry.versions import get_model, get_version
from service.storage.base import ArtifactStore, ObjectNotFound

__all__ = ["delete_version", "delete_model", "version_objects", "after_commit", "delete_objects_after_commit"]


def version_objects(store: ArtifactStore, manifest_sha: str) -> set[str]:
    """The manifest and every file it lists (what one version keeps alive; retention asks too)."""
    try:
        return {manifest_sha} | {sha for sha, _ in store.read_manifest(manifest_sha).values()}
    except ObjectNotFound:
        return {manifest_sha}


def _orphans(session: Session, store: ArtifactStore, leaving: list[ModelVersion]) -> set[str]:
    leaving_ids = {v.id for v in leaving}
    kept = session.scalars(select(ModelVersion.sha256).where(ModelVersion.id.not_in(sorted(leaving_ids))).distinct())
    alive = set().union(*(version_objects(store, sha) for sha in kept))
    return set().union(*(version_objects(store, v.sha256) for v in leaving)) - alive


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` once the session's transaction commits; forget it if it rolls back first.

    Files go only after the rows that named them: a rolled back delete leaves every file in place,
    and a reader never finds a row whose files are already gone.
    """
    state = {"pending": True}

    def on_commit(_session: Session) -> None:
        if state["pending"]:
            state["pending"] = False
            action()

    def on_rollback(_session: Session) -> None:
        state["pending"] = False

    event.listen(session, "after_commit", on_commit, once=True)
    event.listen(session, "after_rollback", on_rollback, once=True)


def delete_objects_after_commit(session: Session, store: ArtifactStore, shas: set[str]) -> None:
    """Remove ``shas`` from the store once the session commits; forget them if it rolls back."""

    def delete() -> None:
        for sha in sorted(shas):
            store.delete(sha)

    after_commit(session, delete)


def _refuse_labelled(session: Session, versions: list[ModelVersion], force: bool) -> None:
    for version in versions:
        labels = stages_of(session, version)
        if labels and not force:
            raise Conflict(f"version {version.version} of model {version.model.name!r} is labelled {labels}: "
                           "move the label to another version first (promote), or delete with force=True")
        for stage in labels:
            version.model.stages.remove(next(a for a in version.model.stages if a.stage == stage))
    session.flush()  # labels go before the versions they point at


def delete_version(session: Session, store: ArtifactStore, name: str, version: int, *,
                   force: bool = False) -> set[str]:
    """Delete one version; refused (:class:`Conflict`) while a stage label points at it unless
    ``force``, which removes those labels too. Returns the objects that go when the session commits."""
    target = get_version(session, name, version)
    _refuse_labelled(session, [target], force)
    orphans = _orphans(session, store, [target])
    target.model.versions.remove(target)
    session.flush()
    delete_objects_after_commit(session, store, orphans)
    return orphans


def delete_model(session: Session, store: ArtifactStore, name: str, *, force: bool = False) -> set[str]:
    """Delete a model and all its versions; refused while any version is labelled unless ``force``."""
    model: Model = get_model(session, name)
    versions = list(model.versions)
    _refuse_labelled(session, versions, force)
    orphans = _orphans(session, store, versions)
    session.delete(model)
    session.flush()
    delete_objects_after_commit(session, store, orphans)
    return orphans
