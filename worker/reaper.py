"""The reaper: put a running job whose worker went silent back in its queue.

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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine, select, update

from service.core.config import Settings, get_settings
from service.db import Job, JobStatus, get_engine, session_scope, utcnow
from worker.celery_app import REAP_TASK, app

__all__ = ["reap_stale_jobs", "reap"]

log = logging.getLogger(__name__)


def reap_stale_jobs(engine: Engine, send: Callable[[str, str], None], stale_s: float) -> list[str]:
    """Re-queue every running job silent for more than ``stale_s``; ``send(kind, job_id)`` queues its task.

    Returns the ids re-queued. If sending fails, the job is put back as it was (still running and
    stale), so the next round tries again; nothing is left queued without a message.
    """
    cutoff = utcnow() - timedelta(seconds=stale_s)
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
                        progress={**(progress or {}), "phase": "requeued", "requeued_after_attempt": attempts})
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


def _sender(settings: Settings) -> Callable[[str, str], None]:
    from worker.celery_app import REGISTRATION_TASK, TRAINING_TASK

    routes = {"registration": (REGISTRATION_TASK, settings.inference_queue),
              "training": (TRAINING_TASK, settings.training_queue)}

    def send(kind: str, job_id: str) -> None:
        name, queue = routes[kind]
        app.send_task(name, args=[job_id], queue=queue)

    return send


@app.task(name=REAP_TASK, ignore_result=True)
def reap() -> list[str]:
    """Celery beat's entry (see ``beat_schedule`` in ``worker.celery_app``)."""
    settings = get_settings()
    engine = get_engine(settings.database_url, settings.db_busy_timeout_ms)
    return reap_stale_jobs(engine, _sender(settings), settings.heartbeat_stale_s)
