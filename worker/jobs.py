"""A job row's life in a worker: claim it, beat while it runs, finish it once.

The row is the truth (DESIGN "Jobs survive crashes"). A delivery *claims* the job by moving it to
``running`` and counting one more attempt, with a conditional UPDATE on the attempt count it read,
so two deliveries racing for one job cannot both win. Every later write (heartbeat, progress, the
final status) is conditional on ``status = running`` and ``attempts =`` its own attempt: a delivery
that was overtaken (the reaper re-enqueued the job, the API cancelled it, a newer attempt claimed
it) finds its writes refused and stops without touching the newer state.

>>> claim = claim_job(engine, job_id, JobKind.REGISTRATION, max_attempts=3)  # doctest: +SKIP
>>> with JobMonitor(engine, claim, heartbeat_interval_s=5, progress_min_interval_s=0.5) as monitor:
...     monitor.progress(phase="registering")   # raises JobStopped once cancelled or overtaken
>>> finish_job(engine, claim, JobStatus.SUCCEEDED, result={...})
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, select, update

from service.core.config import Settings
from service.db import Job, JobKind, JobStatus, get_engine, session_scope, utcnow
from service.storage import ArtifactStore, LocalArtifactStore
from worker.failures import TRANSIENT_ERRORS, JobFailure, describe_failure

__all__ = ["Claim", "JobStopped", "JobMonitor", "claim_job", "finish_job", "worker_name", "run_job", "Work",
           "add_output"]

log = logging.getLogger(__name__)
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class Claim:
    """This delivery's hold on a job: its attempt number and the job's parameters."""

    job_id: str
    attempt: int
    params: dict[str, Any]


class JobStopped(Exception):
    """The job was cancelled (``reason == "cancelled"``) or is no longer this attempt's (``"overtaken"``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def worker_name() -> str:
    """``host:pid``, recorded in ``jobs.worker`` for operators."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _held(claim: Claim) -> ColumnElement[bool]:
    return (Job.id == claim.job_id) & (Job.status == JobStatus.RUNNING) & (Job.attempts == claim.attempt)


def _update(session, where: ColumnElement[bool], **values: Any) -> int:
    statement = update(Job).where(where).values(**values).execution_options(synchronize_session=False)
    return session.execute(statement).rowcount


def claim_job(engine: Engine, job_id: str, kind: JobKind, max_attempts: int, *,
              only_if_queued: bool = False) -> Claim | None:
    """Mark the job ``running`` for one more attempt; None when there is nothing to run.

    Nothing to run: the row is gone, of another kind, finished (a redelivered message), or lost to
    a concurrent claim. A job with ``cancel_requested`` becomes ``cancelled``; one that already had
    ``max_attempts`` deliveries (each killed its worker, say) becomes ``failed``. With
    ``only_if_queued`` (a copy the reaper sent, see ``worker.reaper``) a running job is left to its
    live attempt: the same conditional UPDATE that claims checks it, so two copies cannot both win.
    """
    claimable = (JobStatus.QUEUED,) if only_if_queued else ACTIVE
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None or job.kind != kind or job.status not in claimable:
            log.info("job %s: %s, nothing to do", job_id, "gone" if job is None else
                     f"a {job.kind.value} job" if job.kind != kind else f"already {job.status.value}")
            return None
        attempts, params, now = job.attempts, dict(job.params or {}), utcnow()
        seen = (Job.id == job_id) & (Job.attempts == attempts) & Job.status.in_(claimable)
        if job.cancel_requested:
            _update(session, seen, status=JobStatus.CANCELLED, finished_at=now, progress={"phase": "cancelled"})
            return None
        if attempts >= max_attempts:
            failure = JobFailure("too_many_attempts", f"gave up after {attempts} attempts that ended without a "
                                 "result (a worker killed, out of memory, or past the time limit)", 500)
            _update(session, seen, status=JobStatus.FAILED, finished_at=now, error=failure.error_text,
                    result={"error": failure.to_dict()})
            return None
        claimed = _update(session, seen, status=JobStatus.RUNNING, attempts=attempts + 1, started_at=now,
                          heartbeat_at=now, finished_at=None, worker=worker_name(), progress={"phase": "starting"},
                          error=None, result=None)
    return Claim(job_id, attempts + 1, params) if claimed == 1 else None


def finish_job(engine: Engine, claim: Claim, status: JobStatus, *, result: dict[str, Any] | None = None,
               error: str | None = None) -> bool:
    """Record the final status; False when the job was no longer this attempt's (nothing written)."""
    now = utcnow()
    with session_scope(engine) as session:
        # The last progress stays readable (a training's final epoch, losses, m_t, validation Dice).
        last = session.scalar(select(Job.progress).where(_held(claim))) or {}
        done = _update(session, _held(claim), status=status, finished_at=now, heartbeat_at=now, result=result,
                       error=error, progress={**last, "phase": status.value})
    if done != 1:
        log.warning("job %s attempt %d: overtaken, its %s outcome is dropped", claim.job_id, claim.attempt,
                    status.value)
    return done == 1


class JobMonitor:
    """A heartbeat thread, throttled progress writes and the stop signal, for one claimed job.

    Every ``heartbeat_interval_s`` the thread refreshes ``heartbeat_at`` (with pending progress)
    and reads ``cancel_requested``; :meth:`progress` writes at most once per
    ``progress_min_interval_s`` (later values wait for the next write) and raises
    :class:`JobStopped` once the job is cancelled or overtaken.
    """

    def __init__(self, engine: Engine, claim: Claim, heartbeat_interval_s: float,
                 progress_min_interval_s: float) -> None:
        self.engine, self.claim = engine, claim
        self.heartbeat_interval_s, self.progress_min_interval_s = heartbeat_interval_s, progress_min_interval_s
        self.stop_reason: str | None = None
        self._progress: dict[str, Any] | None = None
        self._last_write = -math.inf
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{claim.job_id}", daemon=True)

    def __enter__(self) -> JobMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def progress(self, **fields: Any) -> None:
        """Set the job's progress (``phase``, ``step``, ...); raise :class:`JobStopped` if it should stop."""
        with self._lock:
            self._progress = fields
            due = time.monotonic() - self._last_write >= self.progress_min_interval_s
        if due:
            self.beat()
        self.check()

    def check(self) -> None:
        if self.stop_reason is not None:
            raise JobStopped(self.stop_reason)

    def confirm(self) -> None:
        """Beat now and raise :class:`JobStopped` unless the job is still this attempt's: call it
        before a step that cannot be undone (replacing the job's published outputs)."""
        self.beat()
        self.check()

    def beat(self) -> None:
        """Write the heartbeat and any pending progress now, and learn whether to stop."""
        with self._lock:
            values: dict[str, Any] = {"heartbeat_at": utcnow()}
            if self._progress is not None:
                values["progress"] = self._progress
            with session_scope(self.engine) as session:
                held = _update(session, _held(self.claim), **values)
                cancel = session.scalar(select(Job.cancel_requested).where(Job.id == self.claim.job_id))
            self._progress, self._last_write = None, time.monotonic()
            if held != 1:
                self.stop_reason = "overtaken"
            elif cancel:
                self.stop_reason = "cancelled"

    def _run(self) -> None:
        while not self._done.wait(self.heartbeat_interval_s):
            try:
                self.beat()
            except Exception:  # a database hiccup must not kill the thread; the next beat retries
                log.warning("job %s: heartbeat failed", self.claim.job_id, exc_info=True)


#: A task's own work on a claimed job: returns the job's ``result``; raises to fail it.
Work = Callable[[Claim, Engine, ArtifactStore, JobMonitor], dict[str, Any]]


def run_job(job_id: str, kind: JobKind, settings: Settings, work: Work, *, only_if_queued: bool = False) -> None:
    """A delivery's whole life: claim the job, run ``work`` under a heartbeat, record the outcome once.

    Cancelled -> ``cancelled``; overtaken -> nothing written; a transient database error is
    raised for Celery to retry; any other exception fails the job with its code and message (a
    short traceback for unexpected ones); otherwise ``succeeded`` with ``work``'s result.
    """
    engine = get_engine(settings.database_url, settings.db_busy_timeout_ms)
    store = LocalArtifactStore(settings.artifact_dir)
    claim = claim_job(engine, job_id, kind, settings.max_attempts, only_if_queued=only_if_queued)
    if claim is None:
        return
    monitor = JobMonitor(engine, claim, settings.heartbeat_interval_s, settings.progress_min_interval_s)
    try:
        with monitor:
            result = work(claim, engine, store, monitor)
    except JobStopped as stop:
        log.info("%s job %s: %s, stopped", kind.value, job_id, stop.reason)
        if stop.reason == "cancelled":
            finish_job(engine, claim, JobStatus.CANCELLED)
        return
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:  # recorded on the job: the row is the truth, the task ends cleanly
        failure = describe_failure(error, hide=_job_dir_or_none(store, job_id))
        log.log(logging.ERROR if failure.traceback else logging.INFO, "%s job %s failed: %s", kind.value, job_id,
                failure.error_text, exc_info=failure.traceback is not None)
        finish_job(engine, claim, JobStatus.FAILED, result={"error": failure.to_dict()}, error=failure.error_text)
        return
    finish_job(engine, claim, JobStatus.SUCCEEDED, result=result)


def add_output(engine: Engine, claim: Claim, role: str, output: dict[str, Any]) -> bool:
    """Add ``output`` under ``role`` to a succeeded job's ``result["outputs"]`` (this attempt's only).

    Read and written in one transaction with the row locked (``FOR UPDATE`` where the database has
    it), so a concurrent delete or expiry either happens first (nothing added) or waits.
    """
    with session_scope(engine) as session:
        where = (Job.id == claim.job_id) & (Job.status == JobStatus.SUCCEEDED) & (Job.attempts == claim.attempt) \
            & Job.expired_at.is_(None)
        job = session.scalars(select(Job).where(where).with_for_update()).first()
        if job is None:
            return False
        result = dict(job.result or {})
        result["outputs"] = {**result.get("outputs", {}), role: output}
        job.result = result
    return True


def _job_dir_or_none(store: ArtifactStore, job_id: str) -> Path | None:
    try:
        return store.job_dir(job_id)
    except ValueError:  # not a valid job id: the failure is that, and no folder to hide
        return None
