"""service/retention.py on SQLite and PostgreSQL, with a real artifact store in a temporary folder.

Old finished jobs lose their folder and the output objects nothing else uses and are marked expired;
recent and unfinished ones keep everything; objects shared with another job or a model version
stay; folders no row owns go once older than the grace; ``job_retention_days = 0`` keeps all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service.core.config import Settings
from service.db import Dataset, DatasetLayout, Job, JobKind, JobStatus, session_scope, utcnow
from service.registry import register_version
from service.retention import RetentionReport, expire_jobs, remove_job_files, remove_orphans, run_retention
from service.storage import LocalArtifactStore

ROOT = Path(__file__).resolve().parents[2]
DAY = 24 * 3600


def add_job(engine: Engine, store: LocalArtifactStore, status: JobStatus = JobStatus.SUCCEEDED,
            finished_days_ago: float = 40, outputs: dict[str, bytes] | None = None,
            kind: JobKind = JobKind.REGISTRATION) -> str:
    """A job laid out as the API and the worker leave it: inputs in its folder, outputs as objects."""
    now = utcnow()
    job = Job(kind=kind, status=status, params={}, created_at=now - timedelta(days=finished_days_ago + 1),
              finished_at=now - timedelta(days=finished_days_ago) if status.finished else None)
    with session_scope(engine) as session:
        session.add(job)
        session.flush()
        folder = store.job_dir(job.id)
        (folder / "inputs").mkdir()
        (folder / "inputs" / "fixed.nii.gz").write_bytes(b"fixed")
        if outputs is not None:
            entries = {role: {"file": f"{role}.bin", "sha256": store.put_bytes(data), "size_bytes": len(data)}
                       for role, data in outputs.items()}
            job.result = {"outputs": entries, "report": {"dice": 0.9}, "timings_s": {"total": 0.5}}
        elif status == JobStatus.FAILED:
            job.result, job.error = {"error": {"code": "internal_error"}}, "internal_error: boom"
        return job.id


def load(engine: Engine, job_id: str) -> Job:
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def age(path: Path, seconds: float) -> Path:
    """Set the modification time of ``path`` and everything in it to ``seconds`` ago."""
    when = time.time() - seconds
    for item in [*path.rglob("*"), path]:
        os.utime(item, (when, when), follow_symlinks=False)
    return path


def test_an_old_finished_job_loses_its_folder_and_objects_and_is_marked_expired(engine, store):
    outputs = {"displacement": b"displacement of A", "report": b'{"dice": 0.9, "job": "A"}'}
    job_id = add_job(engine, store, outputs=outputs)
    failed = add_job(engine, store, JobStatus.FAILED)
    cancelled = add_job(engine, store, JobStatus.CANCELLED, kind=JobKind.TRAINING)
    report = expire_jobs(engine, store, retention_days=30)
    assert report == RetentionReport(expired_jobs=3, removed_objects=2)
    for gone in (job_id, failed, cancelled):
        assert not (store.root / "jobs" / gone).exists()
        assert load(engine, gone).expired_at is not None
    assert not any(store.exists(sha(data)) for data in outputs.values())
    job = load(engine, job_id)
    assert job.status == JobStatus.SUCCEEDED  # what happened stays readable; only the files went
    assert job.result == {"report": {"dice": 0.9}, "timings_s": {"total": 0.5}}
    assert load(engine, failed).result == {"error": {"code": "internal_error"}}
    assert load(engine, failed).error == "internal_error: boom"
    assert expire_jobs(engine, store, retention_days=30) == RetentionReport()  # once


def test_recent_running_and_queued_jobs_keep_everything(engine, store):
    recent = add_job(engine, store, finished_days_ago=29, outputs={"displacement": b"recent"})
    running = add_job(engine, store, JobStatus.RUNNING, finished_days_ago=40)
    queued = add_job(engine, store, JobStatus.QUEUED, finished_days_ago=40)
    assert expire_jobs(engine, store, retention_days=30) == RetentionReport()
    for job_id in (recent, running, queued):
        assert (store.job_dir(job_id) / "inputs" / "fixed.nii.gz").is_file()
        assert load(engine, job_id).expired_at is None
    assert store.exists(sha(b"recent")) and "outputs" in load(engine, recent).result


def test_an_object_another_job_or_a_model_version_uses_stays(engine, store, session, make_artifact):
    artifact = make_artifact()
    register_version(session, store, "cardiac", artifact)
    session.commit()
    card = (artifact / "card.json").read_bytes()  # the same bytes as a file of the version
    old = add_job(engine, store, outputs={"displacement": b"shared", "warped": b"only A's", "report": card})
    newer = add_job(engine, store, finished_days_ago=1, outputs={"displacement": b"shared"})
    assert expire_jobs(engine, store, retention_days=30) == RetentionReport(expired_jobs=1, removed_objects=1)
    assert not store.exists(sha(b"only A's")) and store.exists(sha(b"shared")) and store.exists(sha(card))
    assert load(engine, old).expired_at is not None
    # Later the newer job expires too: an expired job keeps nothing alive, a model version still does.
    report = expire_jobs(engine, store, retention_days=30, now=utcnow() + timedelta(days=30))
    assert report == RetentionReport(expired_jobs=1, removed_objects=1)
    assert not store.exists(sha(b"shared")) and store.exists(sha(card))
    assert load(engine, newer).expired_at is not None


def test_zero_days_keeps_everything_forever(engine, store, tmp_path):
    job_id = add_job(engine, store, finished_days_ago=10_000, outputs={"displacement": b"kept"})
    settings = Settings(data_dir=tmp_path / "data", job_retention_days=0)
    assert expire_jobs(engine, store, retention_days=0) == RetentionReport()
    assert run_retention(engine, store, settings).expired_jobs == 0
    assert store.job_dir(job_id).is_dir() and store.exists(sha(b"kept"))
    assert load(engine, job_id).expired_at is None


def test_files_go_only_when_the_transaction_commits(engine, store):
    job_id = add_job(engine, store, outputs={"displacement": b"rolled back"})
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        job = session.get(Job, job_id)
        assert remove_job_files(session, store, job) == {sha(b"rolled back")}
        session.delete(job)
        raise RuntimeError("the request failed after the delete")
    assert store.job_dir(job_id).is_dir() and store.exists(sha(b"rolled back"))
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        remove_job_files(session, store, job)
        session.delete(job)
    assert not (store.root / "jobs" / job_id).exists() and not store.exists(sha(b"rolled back"))


def test_a_round_expires_at_most_a_batch_oldest_first(engine, store):
    oldest, older = add_job(engine, store, finished_days_ago=50), add_job(engine, store, finished_days_ago=40)
    assert expire_jobs(engine, store, retention_days=30, batch=1).expired_jobs == 1
    assert load(engine, oldest).expired_at is not None and load(engine, older).expired_at is None


def test_orphan_folders_older_than_the_grace_go_and_nothing_else(engine, store, tmp_path):
    live = add_job(engine, store, JobStatus.RUNNING)
    expired = add_job(engine, store, finished_days_ago=40)
    with session_scope(engine) as session:
        session.get(Job, expired).expired_at = utcnow()  # its files' removal was cut short by a crash
        dataset = Dataset(name="d", layout=DatasetLayout.MANIFEST, sha256="0" * 64, size_bytes=1, storage_key="k")
        session.add(dataset)
        session.flush()
        dataset_id = dataset.id
    store.dataset_dir(dataset_id)
    folders = {
        "old orphan job": store.job_dir(str(uuid.uuid4())), "young orphan job": store.job_dir(str(uuid.uuid4())),
        "old upload scratch": store.job_dir(f"upload-{uuid.uuid4().hex}"),
        "young upload scratch": store.job_dir(f"upload-{uuid.uuid4().hex}"),
        "old orphan dataset": store.dataset_dir(str(uuid.uuid4())), "live job": store.job_dir(live),
        "expired job": store.job_dir(expired), "dataset with a row": store.dataset_dir(dataset_id),
        "old orphan, a file still being written": store.job_dir(str(uuid.uuid4())),
    }
    for folder in folders.values():
        (folder / "inputs").mkdir(exist_ok=True)
        (folder / "inputs" / "data.bin").write_bytes(b"x")
    for name, folder in folders.items():
        if not name.startswith("young"):
            age(folder, 2 * DAY)
    os.utime(folders["old orphan, a file still being written"] / "inputs" / "data.bin")  # written just now
    litter = store.root / "tmp" / "put.crashed"
    litter.write_bytes(b"half")
    age(litter, 2 * DAY)
    settings = Settings(data_dir=tmp_path / "data", orphan_grace_s=DAY)
    report = run_retention(engine, store, settings)
    gone = {"old orphan job", "old upload scratch", "old orphan dataset", "expired job"}
    assert report == RetentionReport(orphan_folders=len(gone), tmp_entries=1)
    assert {name for name, folder in folders.items() if not folder.exists()} == gone
    assert not litter.exists()
    assert remove_orphans(engine, store, grace_s=DAY) == 0


def test_the_api_can_import_it_without_torch_or_the_worker():
    probe = ("import json, sys, service.retention; "
             "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.split('.')[0] == 'worker')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
