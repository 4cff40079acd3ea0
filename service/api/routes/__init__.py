"""One router per resource: ``health`` (probes and metrics, unversioned) and ``models`` (the registry).

Versioned routers carry their full prefix (``API_V1 + "/models"``) and are included without one:
then each route's own ``path`` is its full template, which the metrics label requests with.
"""

API_V1 = "/v1"

# What any versioned route may answer besides its own successes: a malformed body (400), no key or
# the wrong one (401, 403, before the body is read), an unknown or another owner's item (404), a
# state clash (409), a body over the limit (413, on any route: the limit is checked first) and an
# invalid request (422). Routers add their own (410, 415, 429, 503).
COMMON_ERRORS = (400, 401, 403, 404, 409, 413, 422)


def error_responses(*extra: int) -> dict[int | str, dict]:
    """The OpenAPI ``responses`` of a router: every error code it may answer, all as ``ErrorPublic``."""
    from service.api.schemas import ErrorPublic

    return {code: {"model": ErrorPublic} for code in sorted({*COMMON_ERRORS, *extra})}
