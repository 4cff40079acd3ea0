"""The reaper: put a running job whose worker went silent back in its queue; send a lost job's task again.

A worker killed mid-job (SIGKILL, out of memory, a lost machine) leaves its job ``running`` with a
heartbeat that stops moving. Celery's late acknowledgement would bring the message back only after
the broker's visibility timeout, which must outlast the longest training (hours), and kombu's
filesystem transport of the embedded mode never brings it back. So every ``reaper_interval_s``
Celery beat runs :func:`reap_stale_jobs`: a ``running`` job whose ``heartbeat_at`` is older than
``heartbeat_stale_s`` goes back to ``queued`` and its task is sent again. The task is idempotent:
the next delivery claims the job as a new attempt and a training resumes from its last checkpoint
(``claim_job`` fails a job that has used up ``max_attempts``).

Each job is moved by one conditional UPDATE (still running, same attempt, still stale), so two
reapers, or a reaper racing a heartbeat that came back to life, cannot both act on it; the old
attempt, if it was only slow, finds its next write refused and stops (``JobStopped("overtaken")``).

A broker can lose a queued job's message too: a Redis without persistence that restarted, a wiped
queue folder. The row stays ``queued`` and nothing would ever run it. So the same round runs
:func:`resend_queued_jobs`: a job ``queued`` for over ``queued_resend_s`` since its task was last
sent (its ``created_at``, when the API sent it, or the reaper's mark ``progress["sent_at"]``) is
sent again, with ``progress["resent"]`` counting the copies. The mark is written by a conditional
UPDATE on the unchanged row, so one round sends one copy, and the next copy waits another
``queued_resend_s``.

A late message is not a lost one: behind a long backlog the first copy is still in the queue and
is delivered first. So every message the reaper sends carries ``only_if_queued=True``, and such a
delivery claims the job only while it is still queued (``worker.jobs.claim_job``, in the one
conditional UPDATE that claims): a copy that finds the job running leaves it to its live attempt
(a claim would overtake it and spend one of ``max_attempts``), and one that finds it finished does
nothing, as any delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from sqlalchemy import Engine, Text, cast, select, update

from service.core.config import Settings, get_settings
from service.db import Job, JobKind, JobStatus, get_engine, session_scope, utcnow
from service.jobs.tasks import REAP_TASK, TaskSender
from worker.celery_app import app

__all__ = ["reap_stale_jobs", "resend_queued_jobs", "reap", "SENT_AT", "RESENT"]

log = logging.getLogger(__name__)
SENT_AT, RESENT = "sent_at", "resent"  # progress keys of a queued job: the reaper's last send (ISO 8601), copies


def reap_stale_jobs(engine: Engine, send: Callable[[str, str], None], stale_s: float) -> list[str]:
    """Re-queue every running job silent for more than ``stale_s``; ``send(kind, job_id)`` queues its task.

    Returns the ids re-queued. If sending fails, the job is put back as it was (still running and
    stale), so the next round tries again; nothing is left queued without a message.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=stale_s)
    with session_scope(engine) as session:
        stale = session.execute(select(Job.id, Job.kind, Job.attempts, Job.progress)
                                .where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)).all()
    requeued = []
    for job_id, kind, attempts, progress in stale:
        same = (Job.id == job_id) & (Job.attempts == attempts)
        with session_scope(engine) as session:
            moved = session.execute(
                update(Job).where(same & (Job.status == JobStatus.RUNNING) & (Job.heartbeat_at < cutoff))
                .values(status=JobStatus.QUEUED, worker=None,
                        progress={**(progress or {}), "phase": "requeued", "requeued_after_attempt": attempts,
                                  SENT_AT: now.isoformat()})
                .execution_options(synchronize_session=False)).rowcount
        if moved != 1:
            continue  # it beat again, finished, or another reaper took it
        try:
            send(kind.value, job_id)
        except Exception:
            log.exception("reaper: could not re-queue job %s; it stays running for the next round", job_id)
            with session_scope(engine) as session:
                session.execute(update(Job).where(same & (Job.status == JobStatus.QUEUED))
                                .values(status=JobStatus.RUNNING, progress=progress)
                                .execution_options(synchronize_session=False))
            continue
        log.warning("reaper: job %s (%s) was silent for over %.0f s after attempt %d; re-queued",
                    job_id, kind.value, stale_s, attempts)
        requeued.append(job_id)
    return requeued


def _last_sent(progress: dict[str, Any], created_at: datetime) -> datetime:
    """When the job's task was last sent: the reaper's mark, else the job's creation (the API's send)."""
    try:
        sent = datetime.fromisoformat(progress[SENT_AT])
    except (KeyError, TypeError, ValueError):
        return created_at
    return sent if sent.tzinfo is not None else sent.replace(tzinfo=timezone.utc)


def _resend(engine: Engine, send: Callable[[str, str], None], job_id: str, kind: JobKind, attempts: int,
            progress: dict[str, Any], raw: str | None, now: datetime) -> bool:
    """Mark the job as sent now, then send; put the mark back if sending fails (the next round retries)."""
    # The row as it was read, to the byte: JSON columns have no equality operator on PostgreSQL, their text has.
    unchanged = (Job.id == job_id) & (Job.status == JobStatus.QUEUED) & (Job.attempts == attempts) \
        & (cast(Job.progress, Text) == raw)
    copies = progress.get(RESENT)
    marked = {**progress, RESENT: (copies if isinstance(copies, int) else 0) + 1, SENT_AT: now.isoformat()}
    with session_scope(engine) as session:
        moved = session.execute(update(Job).where(unchanged).values(progress=marked)
                                .execution_options(synchronize_session=False)).rowcount
    if moved != 1:
        return False  # claimed, cancelled or sent again by another reaper meanwhile
    try:
        send(kind.value, job_id)
    except Exception:
        log.exception("reaper: could not send queued job %s again; the next round tries again", job_id)
        same = (Job.id == job_id) & (Job.status == JobStatus.QUEUED) & (Job.attempts == attempts)
        with session_scope(engine) as session:
            session.execute(update(Job).where(same).values(progress=progress)
                            .execution_options(synchronize_session=False))
        return False
    log.warning("reaper: job %s (%s) sat queued since %s with no worker taking it; its task was sent again "
                "(copy %d)", job_id, kind.value, progress.get(SENT_AT, "its creation"), marked[RESENT])
    return True


def resend_queued_jobs(engine: Engine, send: Callable[[str, str], None], resend_s: float, *,
                       now: datetime | None = None) -> list[str]:
    """Send again the task of every job queued for over ``resend_s`` since its task was last sent.

    ``send(kind, job_id)`` queues the task (a message with ``only_if_queued=True``, see the module
    docstring). Returns the ids sent. Nothing else of the row changes: a running attempt, if one
    claims the job meanwhile, depends on nothing the mark touches (the claim replaces ``progress``).
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=resend_s)
    with session_scope(engine) as session:
        waiting = session.execute(select(Job.id, Job.kind, Job.attempts, Job.created_at, Job.progress,
                                         cast(Job.progress, Text).label("progress_text"))
                                  .where(Job.status == JobStatus.QUEUED, Job.created_at < cutoff)).all()
    return [job_id for job_id, kind, attempts, created_at, progress, raw in waiting
            if _last_sent(progress or {}, created_at) < cutoff
            and _resend(engine, send, job_id, kind, attempts, dict(progress or {}), raw, now)]


def _sender(settings: Settings) -> Callable[[str, str], None]:
    """The API's sender on the worker's connection; every message it sends is a copy (``only_if_queued``)."""
    tasks = TaskSender(settings, app=app)
    return partial(tasks.send, only_if_queued=True)


@app.task(name=REAP_TASK, ignore_result=True)
def reap() -> dict[str, list[str]]:
    """Celery beat's entry (see ``beat_schedule`` in ``worker.celery_app``): the ids requeued and resent."""
    settings = get_settings()
    engine = get_engine(settings.database_url, settings.db_busy_timeout_ms)
    send = _sender(settings)
    return {"requeued": reap_stale_jobs(engine, send, settings.heartbeat_stale_s),
            "resent": resend_queued_jobs(engine, send, settings.queued_resend_s)}
