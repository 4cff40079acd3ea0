"""Form fields are a contract: a field the route does not take is refused, not silently dropped.

A misspelled ``moving_msk`` used to register without the mask and answer 202; the user only found
out from a report with no Dice. FastAPI ignores form fields it was not asked for, so every route
that reads a form checks the names that came against the names it declares (its ``Form``/``File``
parameters), after the body is parsed (FastAPI caches the parsed form) and before the endpoint runs,
so no job or file exists yet.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.routing import APIRoute

from models.report import parse_label_names
from service.api.errors import ApiError

__all__ = ["refuse_unknown_form_fields", "UnknownFormFields", "label_names_field"]

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_SHOWN_NAME = 40  # characters of an unknown name quoted back: a name is the user's, but need not be short
_SHOWN_NAMES = 5


class UnknownFormFields(ApiError):
    def __init__(self, unknown: list[str], accepted: list[str]) -> None:
        shown = [name if len(name) <= _SHOWN_NAME else name[:_SHOWN_NAME] + "…" for name in unknown[:_SHOWN_NAMES]]
        more = f" and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
        super().__init__(422, f"unknown form field{'s' * (len(unknown) > 1)} {', '.join(map(repr, shown))}{more}; "
                              f"this route takes: {', '.join(accepted)}", "unknown_form_field")


def declared_form_fields(route: APIRoute) -> list[str]:
    """The form and file fields a route's endpoint declares, by the names a client sends."""
    return [field.alias for field in route.dependant.body_params]


async def refuse_unknown_form_fields(request: Request) -> None:
    """A dependency for routes that read a form: 422 naming every field the route does not take."""
    route = request.scope.get("route")
    content_type = request.headers.get("content-type", "").lower()
    if not isinstance(route, APIRoute) or not content_type.startswith(_FORM_TYPES):
        return
    accepted = declared_form_fields(route)
    unknown = sorted(set((await request.form()).keys()) - set(accepted))
    if unknown:
        raise UnknownFormFields(unknown, accepted)


def label_names_field(labels: str | None) -> dict[str, str] | None:
    """The ``labels`` form field (a JSON object of label names), checked now: a 422 naming it, so a bad
    one never becomes a job."""
    if not labels:
        return None
    try:
        return parse_label_names(labels)
    except ValueError as error:
        raise ApiError(422, f"labels: {error}", "invalid_labels") from None
