"""Shared dependencies as ``Annotated`` aliases: settings, a database session, the store, API keys.

The app's lifespan (``service.main``) builds the settings, engine, session factory and store once
and hands them to every request as lifespan state (``request.state``); nothing here is built at
import time. API keys are off in the embedded default (``api_keys_enabled=False``); when on, a
request carries its key as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.errors import Forbidden, Unauthorized
from service.core.config import Settings
from service.core.security import SCOPES, hash_api_key
from service.db import ApiKey, session_scope
from service.storage import ArtifactStore

__all__ = ["SettingsDep", "SessionDep", "StoreDep", "CurrentKey", "RegisterKey", "TrainKey", "current_api_key",
           "require_scope"]


async def get_settings_dep(request: Request) -> Settings:
    return request.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: commits when the route returns, rolls back if it raises."""
    with session_scope(request.state.session_factory) as session:
        yield session


async def get_store(request: Request) -> ArtifactStore:
    return request.state.store


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": commit before the response is sent, so a client that reads right after a
# write sees it, and a failed commit becomes an error answer instead of a lost write.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]

_KEY_HINT = "send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (when keys are on)")
_bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


def current_api_key(settings: SettingsDep, session: SessionDep,
                    header: Annotated[str | None, Security(_api_key_header)],
                    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> ApiKey | None:
    """The request's key (None when keys are off); 401 names what is missing, unknown or revoked."""
    if not settings.api_keys_enabled:
        return None
    plain = header or (bearer.credentials if bearer else None)
    if not plain:
        raise Unauthorized(f"this server requires an API key: {_KEY_HINT}", "missing_api_key")
    key = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_api_key(plain))).one_or_none()
    if key is None:
        raise Unauthorized("unknown API key: check that it was copied whole, or ask an operator for one",
                           "unknown_api_key")
    if key.revoked:
        raise Unauthorized(f"API key {key.name!r} was revoked at {key.revoked_at:%Y-%m-%d %H:%M} UTC; "
                           "ask an operator for a new one", "revoked_api_key")
    return key


CurrentKey = Annotated[ApiKey | None, Depends(current_api_key)]


def require_scope(scope: str) -> Callable[[ApiKey | None], ApiKey | None]:
    """A dependency that lets a request through only if its key has ``scope`` (403 otherwise)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known scopes: {sorted(SCOPES)}")

    def check(key: CurrentKey) -> ApiKey | None:
        if key is not None and scope not in key.scopes:
            raise Forbidden(f"API key {key.name!r} lacks the scope {scope!r} (it has {sorted(key.scopes)}); "
                            f"use a key created with scope {scope!r}")
        return key

    check.__name__ = f"require_{scope}_scope"
    return check


RegisterKey = Annotated[ApiKey | None, Depends(require_scope("register"))]
TrainKey = Annotated[ApiKey | None, Depends(require_scope("train"))]
