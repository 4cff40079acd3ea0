"""Prometheus metrics of the API process: requests per route and status, their latency, jobs by status.

Request metrics are counted by a small ASGI middleware and labelled with the route's template
(``/v1/models/{name}``), never the raw path, so label values stay few. Jobs are counted from the
database at scrape time: the job table is the truth, and workers on other machines change it.
Each app owns its registry, so several apps in one process (tests) never share counters.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import Job, JobKind, JobStatus

__all__ = ["Metrics", "MetricsMiddleware", "UNMATCHED"]

UNMATCHED = "<unmatched>"  # the route label of requests no route matched (404s, early 413s)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("adacs_http_requests", "HTTP requests answered, by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("adacs_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ["method", "route"], registry=self.registry)
        self.jobs = Gauge("adacs_jobs", "Jobs in the database by kind and status (read at scrape time)",
                          ["kind", "status"], registry=self.registry)
        self.database_up = Gauge("adacs_database_up", "1 if the last scrape could count the jobs, else 0",
                                 registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def scrape(self, session: Session) -> bytes:
        """The exposition text, with the job gauges refreshed from the database first.

        A database that is down does not hide the request metrics: the job gauges keep their last
        values and ``adacs_database_up`` drops to 0.
        """
        try:
            rows = session.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)).all()
        except SQLAlchemyError:
            session.rollback()
            self.database_up.set(0)
            return generate_latest(self.registry)
        self.database_up.set(1)
        counts = {(kind, status): n for kind, status, n in rows}
        for kind in JobKind:
            for status in JobStatus:
                self.jobs.labels(kind.value, status.value).set(counts.get((kind, status), 0))
        return generate_latest(self.registry)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500  # an exception that escapes is answered 500 further out

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")  # set by the router on the shared scope once a route matched
            self.metrics.observe(scope["method"], getattr(route, "path", UNMATCHED), status,
                                 time.perf_counter() - start)
