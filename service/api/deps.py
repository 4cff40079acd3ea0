"""Shared dependencies as ``Annotated`` aliases: settings, a database session, the store, the caller.

The app's lifespan (``service.main``) builds the settings, engine, session factory and store once
and hands them to every request as lifespan state (``request.state``); nothing here is built at
import time. API keys are off in the embedded default (``api_keys_enabled=False``: every request is
the local owner); when on, a request carries its key as ``X-API-Key: <key>`` or
``Authorization: Bearer <key>``. The key is checked by ``service.api.auth.AuthMiddleware`` before
the body is read; the principal aliases below are how a route declares what it needs, and what it
receives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.access import Principal
from service.api.auth import ANY_KEY, PRINCIPAL, needs
from service.api.errors import Forbidden
from service.core.config import Settings
from service.core.security import ADMIN, SCOPES
from service.db import session_scope
from service.storage import ArtifactStore

__all__ = ["SettingsDep", "SessionDep", "StoreDep", "CurrentPrincipal", "RegisterPrincipal", "TrainPrincipal",
           "AdminPrincipal", "current_principal", "require_scope"]


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

# Declared so that the OpenAPI schema documents both ways of sending a key; the middleware reads them.
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (when keys are on)")
_bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


@needs(ANY_KEY)
async def current_principal(request: Request, _header: Annotated[str | None, Security(_api_key_header)],
                            _bearer_token: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
                            ) -> Principal:
    """The caller, as ``AuthMiddleware`` found it from the headers."""
    principal = getattr(request.state, PRINCIPAL, None)
    if principal is None:  # only if the app was assembled without the middleware: refuse, never guess
        raise RuntimeError("no principal on the request: service.api.auth.AuthMiddleware is not installed")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_scope(scope: str) -> Callable[[Principal], Principal]:
    """A dependency declaring that its route needs ``scope`` (the middleware enforces it first)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known scopes: {sorted(SCOPES)}")

    @needs(scope)
    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.may(scope):  # the middleware answers this before the body; kept as the last word
            raise Forbidden(f"API key {principal.name!r} lacks the scope {scope!r}")
        return principal

    check.__name__ = f"require_{scope}_scope"
    return check


RegisterPrincipal = Annotated[Principal, Depends(require_scope("register"))]
TrainPrincipal = Annotated[Principal, Depends(require_scope("train"))]
AdminPrincipal = Annotated[Principal, Depends(require_scope(ADMIN))]
