"""Readiness checks: can this process serve requests that touch the database, the broker and the store?

Each check is a blocking function that returns what it verified or raises with the reason. They
run concurrently in threads, each under a timeout, so a dead dependency answers 503 within a few
seconds instead of hanging the orchestrator's probe.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine, text

from service.api.schemas import CheckPublic
from service.core.config import Settings
from service.db import current_revision, head_revision

__all__ = ["check_database", "check_broker", "check_store", "run_checks", "redact"]

TIMEOUT_S = 3.0


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
