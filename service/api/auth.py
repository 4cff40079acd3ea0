"""Authentication decided from the headers, before a byte of the body is read.

A route declares what it needs in its signature, as FastAPI routes do: ``CurrentPrincipal`` (any
valid key) or ``RegisterPrincipal``/``TrainPrincipal``/``AdminPrincipal`` (a key with that scope;
see ``service.api.deps``). :func:`route_rules` reads those declarations once, when the app is
built, into a table of (path pattern, methods, scope); :class:`AuthMiddleware` finds the request's
rule, looks the key up and checks the scope, all from the headers. So a
7 MB upload without a key is answered 401 at once and the server stops reading it, and a
malformed body without a key is a 401, not a 400: nothing a stranger sends is parsed.

Routes that declare no principal (``/healthz``, ``/readyz``, ``/metrics``, the OpenAPI schema and
``/docs``) are public. A path no route matches needs a valid key too, so probing for paths tells a
stranger nothing. The principal found is put on the request's state, where the dependencies read it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service.access import LOCAL, Principal, principal_of_key
from service.api.errors import ApiError, Forbidden, Unauthorized, error_response
from service.core.security import hash_api_key
from service.db import ApiKey, session_scope

__all__ = ["AuthMiddleware", "RouteRule", "route_rules", "authenticate", "KEY_HINT", "PRINCIPAL", "ANY_KEY", "needs",
           "plain_key"]

KEY_HINT = "send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
PRINCIPAL = "principal"  # the request state's key for the caller
ANY_KEY = ""  # what a route that needs a valid key of any scope declares


def plain_key(headers: Headers) -> str | None:
    """The key a request carries: ``X-API-Key``, else a bearer token; None if neither."""
    if key := headers.get("x-api-key", "").strip():
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def authenticate(session_factory: sessionmaker[Session], headers: Headers) -> Principal:
    """The caller's principal; :class:`Unauthorized` names what is missing, unknown or revoked."""
    plain = plain_key(headers)
    if not plain:
        raise Unauthorized(f"this server requires an API key: {KEY_HINT}", "missing_api_key")
    with session_scope(session_factory) as session:
        key = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_api_key(plain))).one_or_none()
        if key is None:
            raise Unauthorized("unknown API key: check that it was copied whole, or ask an operator for one",
                               "unknown_api_key")
        if key.revoked:
            raise Unauthorized(f"API key {key.name!r} was revoked at {key.revoked_at:%Y-%m-%d %H:%M} UTC; "
                               "ask an operator for a new one", "revoked_api_key")
        return principal_of_key(key)


def needs(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a dependency as declaring ``scope`` (:data:`ANY_KEY` for any valid key)."""
    def mark(dependency: Callable[..., Any]) -> Callable[..., Any]:
        dependency.required_scope = scope  # type: ignore[attr-defined]
        return dependency

    return mark


def _declared(calls: Iterable[Any]) -> str | None:
    """The strictest scope among the dependencies' declarations; None when none declares one."""
    found = [getattr(call, "required_scope", None) for call in calls]
    declared = [scope for scope in found if scope is not None]
    if not declared:
        return None
    return max(declared, key=len)  # a named scope over ANY_KEY ("")


def _dependency_calls(dependant: Any) -> Iterable[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependency_calls(sub)


@dataclass(frozen=True)
class RouteRule:
    """What requests to one route need: a scope, :data:`ANY_KEY`, or None (public)."""

    path_regex: re.Pattern[str]
    methods: frozenset[str] | None
    scope: str | None


def route_rules(routes: Iterable[BaseRoute]) -> list[RouteRule]:
    """The rule of every route (routes of other kinds, e.g. mounts, are skipped: they need a key)."""
    rules = []
    for route in routes:
        if isinstance(route, Route):
            dependant = getattr(route, "dependant", None)
            scope = None if dependant is None else _declared(_dependency_calls(dependant))
            rules.append(RouteRule(route.path_regex, frozenset(route.methods) if route.methods else None, scope))
    return rules


class AuthMiddleware:
    """401/403 from the headers alone, before the app (and its body parsing) runs; see the module docstring."""

    def __init__(self, app: ASGIApp, rules: list[RouteRule]) -> None:
        self.app = app
        self.rules = rules

    def _required(self, scope: Scope) -> str | None:
        """What the request needs: its route's rule; :data:`ANY_KEY` when no route takes it (404, 405)."""
        for rule in self.rules:
            if rule.path_regex.match(scope["path"]) and (rule.methods is None or scope["method"] in rule.methods):
                return rule.scope
        return ANY_KEY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state", {})
        if scope["type"] != "http" or "settings" not in state:
            await self.app(scope, receive, send)
            return
        if not state["settings"].api_keys_enabled:
            state[PRINCIPAL] = LOCAL
            await self.app(scope, receive, send)
            return
        required = self._required(scope)
        if required is None:
            await self.app(scope, receive, send)
            return
        try:
            principal = await anyio.to_thread.run_sync(authenticate, state["session_factory"], Headers(scope=scope))
            if required and not principal.may(required):
                raise Forbidden(f"API key {principal.name!r} lacks the scope {required!r} (it has "
                                f"{sorted(principal.scopes)}); use a key created with scope {required!r}")
        except ApiError as refusal:
            response = await error_response(Request(scope, receive), refusal)
            await response(scope, receive, send)  # the body is never read: the server closes the connection
            return
        state[PRINCIPAL] = principal
        await self.app(scope, receive, send)
