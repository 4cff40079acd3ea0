"""One router per resource: ``health`` (probes and metrics, unversioned) and ``models`` (the registry).

Versioned routers carry their full prefix (``API_V1 + "/models"``) and are included without one:
then each route's own ``path`` is its full template, which the metrics label requests with.
"""

API_V1 = "/v1"
