"""Stage labels (``production``, ``staging``, ...): movable pointers from a model to one of its versions.

Moving a label is how a deployment changes model: requests for ``name`` follow the
``production`` label, while versions themselves never change.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.models import ModelVersion, StageAssignment
from service.registry.errors import Conflict, NotFound
from service.registry.refs import PRODUCTION, check_stage
from service.registry.versions import get_model, get_version

__all__ = ["promote", "demote", "stages_of"]


def promote(session: Session, name: str, version: int, stage: str = PRODUCTION) -> StageAssignment:
    """Point label ``stage`` of model ``name`` at ``version`` (moving it if another version held it)."""
    check_stage(stage)
    target = get_version(session, name, version)
    assignment = session.scalars(select(StageAssignment).where(StageAssignment.model_id == target.model_id,
                                                               StageAssignment.stage == stage)).one_or_none()
    if assignment is None:
        assignment = StageAssignment(model_id=target.model_id, stage=stage, version=version)
        session.add(assignment)
    else:
        assignment.version = version
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"label {stage!r} of model {name!r} was moved by another request at the same moment; "
                       "roll back and retry") from None
    return assignment


def demote(session: Session, name: str, stage: str) -> int:
    """Remove label ``stage`` from model ``name``; return the version it pointed at."""
    model = get_model(session, name)
    assignment = next((a for a in model.stages if a.stage == check_stage(stage)), None)
    if assignment is None:
        raise NotFound(f"model {name!r} has no {stage!r} label; its labels are {[a.stage for a in model.stages]}")
    version = assignment.version
    model.stages.remove(assignment)  # delete-orphan: the row goes, and the loaded collection stays true
    session.flush()
    return version


def stages_of(session: Session, version: ModelVersion) -> list[str]:
    """The labels pointing at ``version``, sorted (what a version's public view shows)."""
    return sorted(session.scalars(select(StageAssignment.stage).where(
        StageAssignment.model_id == version.model_id, StageAssignment.version == version.version)))
