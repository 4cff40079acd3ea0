"""One mapping from typed errors to HTTP answers: ``{"detail": <message>, "code": <snake_case>}``.

Registry errors (``service.registry.errors``) and image errors (``models.io.errors``) carry their
own ``http_status``, so no route needs a ``try``/``except``: they raise, and :func:`error_response`
answers. The API's own refusals (a missing key, a body over the limit) are :class:`ApiError`, an
``HTTPException`` so that FastAPI re-raises it even from inside body parsing.

Invalid requests (FastAPI's ``RequestValidationError``) get the same body with code
``invalid_request`` and an ``errors`` list of ``loc``/``msg``/``type``, never the input itself:
echoing it would send a 7 MB request back, and an ``inf`` in it cannot even be written as JSON.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from models.io.errors import ImageError
from service.registry.errors import RegistryError
from service.storage.atomic import TooLarge

__all__ = ["ApiError", "Unauthorized", "Forbidden", "BodyTooLarge", "error_response", "validation_error_response",
           "install_error_handler"]

MAX_FIELD_ERRORS = 20
MAX_MESSAGE = 200


class ApiError(HTTPException):
    """A refusal of the API itself; ``code`` is the stable name clients can branch on."""

    def __init__(self, status_code: int, detail: str, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.code = code


class Unauthorized(ApiError):
    def __init__(self, detail: str, code: str) -> None:
        # RFC 9110: a 401 names the scheme the client should use.
        super().__init__(401, detail, code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(403, detail, "missing_scope")


class BodyTooLarge(ApiError):
    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes (ADACS_{setting.upper()})",
                         "body_too_large")


# Errors without an ``http_status`` of their own.
_STATUS: dict[type[Exception], int] = {TooLarge: 413}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _status_and_code(error: Exception) -> tuple[int, str]:
    if isinstance(error, HTTPException):
        try:
            phrase = HTTPStatus(error.status_code).phrase
        except ValueError:  # a status outside the standard list
            phrase = "HTTP Error"
        return error.status_code, getattr(error, "code", None) or _snake(phrase.replace(" ", ""))
    status = getattr(error, "http_status", None) or next(s for t, s in _STATUS.items() if isinstance(error, t))
    return status, getattr(error, "code", None) or _snake(type(error).__name__)


async def error_response(request: Request, error: Exception) -> JSONResponse:
    """The one handler: status from the error, body ``{"detail", "code"}``, headers kept (``WWW-Authenticate``)."""
    status, code = _status_and_code(error)
    detail = error.detail if isinstance(error, HTTPException) else str(error)
    headers = getattr(error, "headers", None)
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _field_errors(error: RequestValidationError) -> list[dict[str, object]]:
    return [{"loc": [part if isinstance(part, int) else _short(str(part)) for part in item.get("loc", ())],
             "msg": _short(str(item.get("msg", ""))), "type": _short(str(item.get("type", "")))}
            for item in error.errors()[:MAX_FIELD_ERRORS]]


async def validation_error_response(request: Request, error: Exception) -> JSONResponse:
    """422 naming each invalid field (``loc``, ``msg``, ``type``), without echoing what was sent."""
    assert isinstance(error, RequestValidationError)
    fields = _field_errors(error)
    shown = "; ".join(f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in fields[:3])  # type: ignore[arg-type]
    more = f" (and {len(error.errors()) - 3} more)" if len(error.errors()) > 3 else ""
    return JSONResponse({"detail": _short(f"invalid request: {shown}{more}"), "code": "invalid_request",
                         "errors": fields}, status_code=422)


async def internal_error_response(request: Request, error: Exception) -> JSONResponse:
    """The last resort: a bug is answered in the API's one error shape, with nothing of the request in it."""
    return JSONResponse({"detail": "internal error; the server logged it", "code": "internal_error"},
                        status_code=500)


def install_error_handler(app: FastAPI) -> None:
    for error_type in (HTTPException, RegistryError, ImageError, *_STATUS):
        app.add_exception_handler(error_type, error_response)
    app.add_exception_handler(RequestValidationError, validation_error_response)
    app.add_exception_handler(Exception, internal_error_response)
