"""Retention: a finished job's files go ``job_retention_days`` after it ended; litter with no row goes too.

DESIGN "Who may see what": stored inputs and outputs are private to the service and removed after
the retention period. What a job holds in the artifact store:

- its folder, ``jobs/<id>/``: a registration's uploaded inputs and a copy of its outputs, a
  training's checkpoints;
- a registration's outputs as content-addressed objects (``result["outputs"][role]["sha256"]``).
  Objects are shared by content: a job with byte-identical outputs, or a model version whose
  manifest lists the same bytes, uses the same object. So an object goes only when no other job
  (not expired) and no model version references it.

:func:`remove_job_files` is the one way to drop a job's files (``DELETE /v1/registrations/{id}`` and
:func:`expire_jobs` use it); it removes them only once the transaction that deleted or expired the
row commits (``service.registry.delete.after_commit``), so a rolled back change leaves every file in
place. :func:`expire_jobs` keeps the row, with ``expired_at`` set and ``result["outputs"]`` dropped
(the report, metrics, timings and error stay): a client learns that its job expired, not that it
never existed. ``job_retention_days = 0`` keeps every job's files forever.

:func:`remove_orphans` removes what no row owns: folders under ``jobs/`` and ``datasets/`` without a
live row (an API killed mid-upload, a model upload's ``upload-*`` scratch, the folder of an expired
job whose files were not removed because the process died after the commit) once nothing in them
has changed for ``orphan_grace_s``; the store's ``tmp/`` litter goes after the same grace. A folder
whose row is live is never touched, and nothing younger than the grace.

:func:`run_retention` does a whole round; Celery beat runs it every ``retention_interval_s``
(``worker.tasks.maintenance``). The API process imports this module: no torch, nothing of ``worker/``.

Limits: references are read from committed rows, so a registration that stores byte-identical
outputs while an older job holding the same object expires can lose that object (its folder keeps
a copy in ``outputs/``); an object whose removal failed after the commit is not looked for again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Text, cast, or_, select
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.db import Dataset, Job, JobStatus, ModelVersion, session_scope, utcnow
from service.registry.delete import after_commit, version_objects
from service.storage.base import ArtifactStore, check_sha

__all__ = ["RetentionReport", "output_objects", "remove_job_files", "expire_jobs", "remove_orphans",
           "run_retention", "EXPIRY_BATCH"]

log = logging.getLogger(__name__)

FINISHED = tuple(status for status in JobStatus if status.finished)
# Jobs expired per round at most: a backlog (retention just switched on) spreads over several rounds
# instead of holding a worker for an hour.
EXPIRY_BATCH = 500
_IDS_PER_QUERY = 500  # names per ``IN (...)`` list when matching folders to rows


@dataclass(frozen=True)
class RetentionReport:
    """What one round removed (counts), for the log and the beat task's result."""

    expired_jobs: int = 0
    removed_objects: int = 0
    orphan_folders: int = 0
    tmp_entries: int = 0

    def __add__(self, other: RetentionReport) -> RetentionReport:
        return RetentionReport(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# -- one job's files ---------------------------------------------------------------------------

def _is_sha(value: object) -> bool:
    try:
        check_sha(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def output_objects(result: dict[str, Any] | None) -> set[str]:
    """The objects a job's ``result`` names as its outputs; anything that is not a digest is ignored,
    so a malformed row never becomes a path."""
    outputs = (result or {}).get("outputs")
    entries = outputs.values() if isinstance(outputs, dict) else ()
    return {entry["sha256"] for entry in entries if isinstance(entry, dict) and _is_sha(entry.get("sha256"))}


def _used_by_jobs(session: Session, shas: set[str], job_id: str) -> set[str]:
    """Which of ``shas`` another unexpired job's outputs name.

    A ``LIKE`` on the JSON text finds the candidate rows on SQLite and PostgreSQL alike, without a
    JSON index; parsing their outputs decides.
    """
    text = cast(Job.result, Text)
    rows = session.scalars(select(Job.result).where(Job.id != job_id, Job.expired_at.is_(None),
                                                    or_(*(text.contains(sha) for sha in sorted(shas)))))
    return shas & set().union(*(output_objects(result) for result in rows))


def _used_by_versions(session: Session, store: ArtifactStore, shas: set[str]) -> set[str]:
    """Which of ``shas`` a model version keeps alive (its manifest, or a file the manifest lists)."""
    manifests = session.scalars(select(ModelVersion.sha256).distinct()).all()
    return shas & set().union(*(version_objects(store, manifest) for manifest in manifests))


def _still_used(session: Session, store: ArtifactStore, shas: set[str], job_id: str) -> set[str]:
    """Which of ``shas`` another unexpired job or any model version references."""
    if not shas:
        return set()
    return _used_by_jobs(session, shas, job_id) | _used_by_versions(session, store, shas)


def _attempt(action: Callable[[str], object], name: str) -> bool:
    """Run a removal that follows a commit: the row has changed already, so a failure is logged, not raised."""
    try:
        action(name)
    except (OSError, ValueError):
        log.warning("retention: could not remove %s", name, exc_info=True)
        return False
    return True


def remove_job_files(session: Session, store: ArtifactStore, job: Job) -> set[str]:
    """Remove ``job``'s folder and the output objects nothing else uses, once ``session`` commits.

    Call it in the transaction that deletes the row or marks it expired. Returns the objects that
    go; an object another unexpired job or any model version references stays.
    """
    outputs = output_objects(job.result)
    unshared, job_id = outputs - _still_used(session, store, outputs, job.id), job.id

    def remove() -> None:
        _attempt(store.remove_job_dir, job_id)
        for sha in sorted(unshared):
            _attempt(store.delete, sha)

    after_commit(session, remove)
    return unshared


# -- expiry ------------------------------------------------------------------------------------

def _without_outputs(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result minus its links to files that are gone; report, metrics, timings and error stay."""
    return None if result is None else {key: value for key, value in result.items() if key != "outputs"}


def _expire(engine: Engine, store: ArtifactStore, job_id: str, now: datetime) -> RetentionReport:
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None or job.expired_at is not None:  # deleted meanwhile, or expired by another round
            return RetentionReport()
        objects = remove_job_files(session, store, job)
        job.expired_at, job.result = now, _without_outputs(job.result)
    log.info("retention: job %s (%s, finished %s) expired; %d object(s) removed", job_id, job.kind.value,
             job.finished_at, len(objects))
    return RetentionReport(expired_jobs=1, removed_objects=len(objects))


def expire_jobs(engine: Engine, store: ArtifactStore, retention_days: int, *, now: datetime | None = None,
                batch: int = EXPIRY_BATCH) -> RetentionReport:
    """Expire the jobs that finished (succeeded, failed, cancelled) over ``retention_days`` days ago.

    ``retention_days = 0`` keeps everything. Each job is expired in a transaction of its own (its
    files go right after its commit), so a round that stops half-way keeps what it did; at most
    ``batch`` jobs per call, oldest first, the rest in the next rounds.
    """
    if retention_days <= 0:
        return RetentionReport()
    now = now or utcnow()
    cutoff = now - timedelta(days=retention_days)
    with session_scope(engine) as session:
        due = session.scalars(select(Job.id).where(Job.status.in_(FINISHED), Job.finished_at < cutoff,
                                                   Job.expired_at.is_(None))
                              .order_by(Job.finished_at).limit(batch)).all()
    report = RetentionReport()
    for job_id in due:
        report += _expire(engine, store, job_id, now)
    return report


# -- orphans -----------------------------------------------------------------------------------

def _chunks(names: list[str]) -> Iterable[list[str]]:
    return (names[i:i + _IDS_PER_QUERY] for i in range(0, len(names), _IDS_PER_QUERY))


def _live_job_ids(session: Session, names: list[str]) -> set[str]:
    """The names that are ids of unexpired jobs (an expired job has no files to keep)."""
    return {job_id for chunk in _chunks(names)
            for job_id in session.scalars(select(Job.id).where(Job.id.in_(chunk), Job.expired_at.is_(None)))}


def _dataset_ids(session: Session, names: list[str]) -> set[str]:
    return {dataset_id for chunk in _chunks(names)
            for dataset_id in session.scalars(select(Dataset.id).where(Dataset.id.in_(chunk)))}


def _touched_since(folder: Path, cutoff: float) -> bool:
    """Whether ``folder`` or anything in it was modified at or after ``cutoff`` (a POSIX time).

    The newest time of the whole tree, not the folder's own: a file still being written keeps its
    upload alive. A folder that changes under the walk counts as touched.
    """
    try:
        if folder.lstat().st_mtime >= cutoff:
            return True
        for root, dirs, files in os.walk(folder):
            if any(os.lstat(os.path.join(root, name)).st_mtime >= cutoff for name in (*dirs, *files)):
                return True
    except FileNotFoundError:
        return True
    return False


def _remove_unowned(folders: list[Path], owned: set[str], cutoff: float, remove: Callable[[str], object]) -> int:
    removed = 0
    for folder in folders:
        if folder.name in owned or _touched_since(folder, cutoff) or not _attempt(remove, folder.name):
            continue
        log.info("retention: removed %s (no live row, untouched for the grace period)", folder)
        removed += 1
    return removed


def remove_orphans(engine: Engine, store: ArtifactStore, grace_s: float, *, now: datetime | None = None) -> int:
    """Remove the folders under ``jobs/`` and ``datasets/`` that no live row owns and nothing has
    touched for ``grace_s`` seconds; returns how many went.

    Owned: a job folder by its job's row unless that job expired, a dataset folder by its row.
    Model uploads' ``upload-*`` scratch folders have no row, so they go after the grace too.
    """
    cutoff = (now or utcnow()).timestamp() - grace_s
    jobs, datasets = store.list_job_dirs(), store.list_dataset_dirs()
    with session_scope(engine) as session:
        live_jobs = _live_job_ids(session, [folder.name for folder in jobs])
        live_datasets = _dataset_ids(session, [folder.name for folder in datasets])
    return (_remove_unowned(jobs, live_jobs, cutoff, store.remove_job_dir)
            + _remove_unowned(datasets, live_datasets, cutoff, store.remove_dataset_dir))


# -- a round -----------------------------------------------------------------------------------

def run_retention(engine: Engine, store: ArtifactStore, settings: Settings,
                  now: datetime | None = None) -> RetentionReport:
    """One round: expire old jobs, then remove orphan folders and the store's temporary litter.

    Expiry goes first, so that its folders are gone before the orphan pass looks.
    """
    report = expire_jobs(engine, store, settings.job_retention_days, now=now)
    report += RetentionReport(orphan_folders=remove_orphans(engine, store, settings.orphan_grace_s, now=now),
                              tmp_entries=store.sweep_tmp(settings.orphan_grace_s))
    if report != RetentionReport():
        log.info("retention: %s", report.as_dict())
    return report
