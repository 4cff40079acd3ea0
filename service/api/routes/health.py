"""Probes and metrics, outside ``/v1`` and without API keys: orchestrators and Prometheus call them.

``/healthz`` says the process is alive and touches nothing; ``/readyz`` checks what requests need
(database at the schema this code expects, broker, writable artifact store) and that each queue the
API sends to has a live worker (``service.api.readiness``), so a deployment whose workers are all
down is not ready even though every request would be accepted; ``/metrics`` is the Prometheus text
format.
"""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import SessionDep, SettingsDep
from service.api.readiness import check_broker, check_database, check_store, check_workers, run_checks
from service.api.schemas import LivenessPublic, ReadinessPublic

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def liveness() -> LivenessPublic:
    return LivenessPublic()


@router.get("/readyz", summary="Database, broker and artifact store are usable, and every queue has a live worker",
            responses={503: {"model": ReadinessPublic,
                             "description": "a dependency failed, or a queue has no live worker: the check says"}})
async def readiness(request: Request, settings: SettingsDep, response: Response) -> ReadinessPublic:
    checks = await run_checks({
        "database": partial(check_database, request.state.engine, settings.database_url),
        "broker": partial(check_broker, settings),
        "artifact_store": partial(check_store, settings.artifact_dir),
        "workers": partial(check_workers, request.state.tasks, request.state.engine, settings.heartbeat_stale_s),
    })
    ready = all(check.ok for check in checks.values())
    response.status_code = 200 if ready else 503
    return ReadinessPublic(ready=ready, checks=checks)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                             "description": "request counts and latency per route and status; jobs by status"}})
def metrics(request: Request, session: SessionDep) -> Response:
    return Response(request.app.state.metrics.scrape(session), media_type=CONTENT_TYPE_LATEST)
