"""Celery beat runs retention in a real worker of the embedded mode (filesystem broker, ``--beat``), the
way ``adacs serve`` starts its worker: an old finished job expires and an old orphan folder goes,
while a young orphan folder stays.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import pytest

from service.core.config import Settings
from service.db import Job, JobStatus, get_engine, session_scope, utcnow
from service.storage import LocalArtifactStore

TIMEOUT_S = 60


def test_beat_runs_retention_in_the_embedded_worker(sqlite_url, create_job, load_job, worker_process, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url)  # the embedded default broker
    store = LocalArtifactStore(settings.artifact_dir)
    old = create_job(settings)
    displacement = store.put_bytes(b"an old displacement")
    with session_scope(get_engine(settings.database_url)) as session:
        job = session.get(Job, old)
        job.status, job.finished_at = JobStatus.SUCCEEDED, utcnow() - timedelta(days=40)
        job.result = {"outputs": {"displacement": {"file": "displacement.nii.gz", "sha256": displacement,
                                                   "size_bytes": 19}}, "report": {"dice": 0.8}}
    orphan, young = store.job_dir(str(uuid.uuid4())), store.job_dir(str(uuid.uuid4()))
    two_hours_ago = time.time() - 7200
    os.utime(orphan, (two_hours_ago, two_hours_ago))

    env = {"ADACS_DATA_DIR": str(settings.data_dir), "ADACS_DATABASE_URL": sqlite_url,
           "ADACS_RETENTION_INTERVAL_S": "1", "ADACS_ORPHAN_GRACE_S": "3600"}
    worker = worker_process(env, ["inference"], tmp_path / "worker.log", beat=True)
    deadline = time.monotonic() + TIMEOUT_S
    while orphan.exists() or load_job(settings, old).expired_at is None:
        if not worker.alive() or time.monotonic() > deadline:
            pytest.fail(f"retention did not run; worker log:\n{worker.tail()}", pytrace=False)
        time.sleep(0.2)
    assert not (settings.artifact_dir / "jobs" / old).exists() and not store.exists(displacement)
    assert load_job(settings, old).result == {"report": {"dice": 0.8}}
    assert young.is_dir()
    assert "adacs.maintenance.retention" in worker.tail(10**7)
