"""Readiness checks: can this process serve requests that touch the database, the broker and the store,
and is a worker there to run what it queues?

Each check is a blocking function that returns what it verified or raises with the reason. They
run concurrently in threads, each under a timeout, so a dead dependency answers 503 within a few
seconds instead of hanging the orchestrator's probe.

Workers are found two ways, because neither alone covers every pool. Celery's broadcast
``inspect active_queues`` reaches every worker's main process through the broker (Redis pub/sub,
or the embedded filesystem transport's fanout) and each answers with the queues it consumes; a
prefork worker answers even while its pool runs a training. A ``--pool solo`` worker (``adacs
serve``, the tests) runs its task in the process that would answer, so a running job whose
heartbeat is fresh counts as a live worker on its kind's queue too. A queue with neither is named
in the 503: jobs sent there would wait until a worker starts.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from celery import Celery
from sqlalchemy import Engine, func, select, text

from service.api.schemas import CheckPublic
from service.core.config import Settings
from service.db import Job, JobKind, JobStatus, current_revision, head_revision, session_scope, utcnow
from service.jobs.tasks import TaskSender

__all__ = ["check_database", "check_broker", "check_store", "check_workers", "live_workers", "busy_queues",
           "run_checks", "redact"]

TIMEOUT_S = 3.0
# How long the broadcast waits for workers' answers: every answer that comes in this window counts,
# so it is also what a ready /readyz costs. A worker's main process answers in milliseconds.
WORKER_REPLY_S = 1.5


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@cache
def _head() -> str | None:
    return head_revision()  # reads the migration scripts: once per process is enough


def check_database(engine: Engine, url: str) -> str:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    current, head = current_revision(url), _head()
    if current != head:
        raise RuntimeError(f"the schema is at revision {current!r} but this code needs {head!r}: migrate it "
                           "(service.db.upgrade_database, or the image's entrypoint)")
    return f"{engine.dialect.name} answers; schema at revision {head}"


def _check_writable(folder: Path) -> None:
    if not folder.is_dir():
        raise RuntimeError(f"{folder} does not exist")
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".readyz.")
    os.close(fd)
    os.unlink(probe)


def check_broker(settings: Settings) -> str:
    url = settings.broker_url or ""
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        import redis  # only the Redis transport needs it

        client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
        return f"PING to {redact(url)} answered"
    if scheme == "filesystem":
        options = settings.broker_transport_options()
        folders = sorted({Path(options[k]) for k in ("data_folder_in", "data_folder_out", "control_folder")})
        for folder in folders:
            _check_writable(folder)
        return f"broker folders writable: {', '.join(map(str, folders))}"
    from kombu import Connection  # any other Celery transport (AMQP, SQS, ...)

    with Connection(url, connect_timeout=TIMEOUT_S, transport_options=settings.broker_transport_options()) as conn:
        conn.ensure_connection(max_retries=1)
    return f"connected to {redact(url)}"


def check_store(artifact_dir: Path) -> str:
    _check_writable(artifact_dir / "tmp")
    return f"artifact store {artifact_dir} writable"


def live_workers(celery: Celery, timeout_s: float = WORKER_REPLY_S) -> dict[str, list[str]]:
    """Queue -> node names of the workers that answered the broadcast within ``timeout_s``, consuming it."""
    replies = celery.control.inspect(timeout=timeout_s).active_queues() or {}
    by_queue: dict[str, list[str]] = {}
    for node, queues in sorted(replies.items()):
        for queue in queues or []:
            by_queue.setdefault(queue["name"], []).append(node)
    return by_queue


def busy_queues(engine: Engine, queue_of: dict[JobKind, str], stale_s: float) -> dict[str, int]:
    """Queue -> running jobs whose heartbeat is younger than ``stale_s`` (the reaper's own limit)."""
    cutoff = utcnow() - timedelta(seconds=stale_s)
    with session_scope(engine) as session:
        rows = session.execute(select(Job.kind, func.count()).where(Job.status == JobStatus.RUNNING,
                                                                    Job.heartbeat_at >= cutoff)
                               .group_by(Job.kind)).all()
    busy: dict[str, int] = {}
    for kind, count in rows:  # several kinds may share a queue (pairs and cines: the inference queue)
        busy[queue_of[kind]] = busy.get(queue_of[kind], 0) + count
    return busy


def _describe(queue: str, nodes: list[str], running: int) -> str:
    found = [*nodes, *([f"{running} running job(s)"] if running else [])]
    return f"{queue!r}: {', '.join(found)}"


def check_workers(tasks: TaskSender, engine: Engine, stale_s: float) -> str:
    """Every queue the API sends to has a worker that answered, or one busy with a fresh heartbeat."""
    queue_of = {JobKind.REGISTRATION: tasks.inference_queue, JobKind.CINE: tasks.inference_queue,
                JobKind.TRAINING: tasks.training_queue}
    answered, running = live_workers(tasks.app), busy_queues(engine, queue_of, stale_s)
    queues = list(dict.fromkeys(queue_of.values()))  # one entry when both kinds share a queue
    missing = [queue for queue in queues if not answered.get(queue) and not running.get(queue)]
    if missing:
        names = " and ".join(repr(queue) for queue in missing)
        raise RuntimeError(f"no live worker consumes queue {names} (none answered within {WORKER_REPLY_S} s "
                           "and none is running a job): jobs sent there wait until a worker starts")
    return "; ".join(_describe(queue, answered.get(queue, []), running.get(queue, 0)) for queue in queues)


async def _timed(check: Callable[[], str]) -> CheckPublic:
    start = time.perf_counter()
    try:
        detail, ok = await asyncio.wait_for(asyncio.to_thread(check), TIMEOUT_S + 1), True
    except asyncio.TimeoutError:  # not the builtin before Python 3.11
        detail, ok = f"no answer within {TIMEOUT_S + 1:.0f} s", False
    except Exception as error:  # noqa: BLE001 - any failure means "not ready", and its message says why
        detail, ok = f"{type(error).__name__}: {error}", False
    return CheckPublic(ok=ok, detail=detail, duration_ms=round(1000 * (time.perf_counter() - start), 1))


async def run_checks(checks: dict[str, Callable[[], str]]) -> dict[str, CheckPublic]:
    results = await asyncio.gather(*(_timed(check) for check in checks.values()))
    return dict(zip(checks, results))
