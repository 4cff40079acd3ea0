"""Refuse request bodies over the configured limit with 413, before they are read to the end.

A declared ``Content-Length`` over the limit is answered at once, without reading a byte of the
body. A chunked body (no length) is counted while the app reads it; the read that crosses the
limit raises :class:`BodyTooLarge`, which FastAPI lets through even from form parsing, so at most
one chunk past the limit is ever spooled. The limit comes from the settings at request time (the
app is built before they are known) and may differ by path: datasets are larger than models.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import BodyTooLarge, error_response
from service.core.config import Settings

__all__ = ["BodySizeLimitMiddleware", "upload_limit"]


def upload_limit(settings: Settings, path: str) -> tuple[int, str]:
    """(limit in bytes, the setting that holds it) for a request to ``path``."""
    if path.startswith("/v1/datasets"):
        return settings.max_dataset_bytes, "max_dataset_bytes"
    return settings.max_upload_bytes, "max_upload_bytes"


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, limit_for: Callable[[Settings, str], tuple[int, str]] = upload_limit) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "settings" not in scope.get("state", {}):
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["state"]["settings"], scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, BodyTooLarge(limit, setting))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        await self.app(scope, counting_receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: BodyTooLarge) -> None:
        response = await error_response(Request(scope, receive), error)
        await response(scope, receive, send)
