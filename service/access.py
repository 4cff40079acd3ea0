"""Who may see and change what (DESIGN "Who may see what"): principals and the ownership rules.

Every job, dataset and model records the API key that made it (``owner_key_id``). A key sees its
own items; a key with the ``admin`` scope sees all of them. Models have one more rule: a model with
no owner is the operator's shared catalogue (the bundled starter, versions an admin uploaded), which
every key may read and register with; only ``admin`` may change it. With API keys off (the embedded
default) every request is the one local owner, :data:`LOCAL`, which holds every scope.

Used by the API (filtering lists, answering 404 for other owners' items) and by the worker (the
model a job may register with, the model a training may add a version to), so the rules live here,
away from the web layer and from torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, true
from sqlalchemy.orm import Session

from service.core.security import ADMIN, SCOPES, grants
from service.db.models import ApiKey, Model

__all__ = ["Principal", "LOCAL", "principal_of_key", "principal_for_owner", "owned_by", "may_see",
           "models_visible_to", "may_see_model", "may_add_version"]


@dataclass(frozen=True)
class Principal:
    """The caller of a request, or the owner a worker acts for: a key's id, name and scopes.

    ``key_id`` None is the local owner of the embedded default (keys off) or the operator.
    """

    key_id: str | None
    name: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.scopes

    def may(self, scope: str) -> bool:
        return grants(self.scopes, scope)


LOCAL = Principal(None, "local", SCOPES)


def principal_of_key(key: ApiKey) -> Principal:
    return Principal(key.id, key.name, frozenset(key.scopes))


def principal_for_owner(session: Session, owner_key_id: str | None) -> Principal:
    """The principal a worker acts for: the job's owner key (revoked or not: the job was accepted
    while it was valid), or :data:`LOCAL` for a job made with keys off."""
    if owner_key_id is None:
        return LOCAL
    key = session.get(ApiKey, owner_key_id)
    return principal_of_key(key) if key is not None else Principal(owner_key_id, "deleted key", frozenset())


def owned_by(principal: Principal, owner_column: ColumnElement) -> ColumnElement[bool]:
    """A WHERE clause keeping the rows ``principal`` may see (all of them for an admin)."""
    return true() if principal.is_admin else owner_column == principal.key_id


def may_see(principal: Principal, owner_key_id: str | None) -> bool:
    """The row-level form of :func:`owned_by`, for a row already loaded."""
    return principal.is_admin or (owner_key_id is not None and owner_key_id == principal.key_id)


def models_visible_to(principal: Principal) -> ColumnElement[bool]:
    """Models ``principal`` may read: its own and the shared catalogue (every model for an admin)."""
    if principal.is_admin:
        return true()
    return or_(Model.owner_key_id.is_(None), Model.owner_key_id == principal.key_id)


def may_see_model(principal: Principal, model: Model) -> bool:
    return principal.is_admin or model.owner_key_id is None or model.owner_key_id == principal.key_id


def may_add_version(principal: Principal, model: Model) -> bool:
    """A new version changes what ``name:latest`` means: only the model's owner, or an admin."""
    return principal.is_admin or (model.owner_key_id is not None and model.owner_key_id == principal.key_id)
