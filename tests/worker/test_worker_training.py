"""worker/tasks/training.py without Celery, on both backends: any architecture with any method trains from
a job row, registers its estimator alone, and bad job parameters fail the job with a message."""

from __future__ import annotations

import shutil

import pytest

from service.db import Dataset, DatasetLayout, DatasetStatus, Job, JobKind, JobStatus, ModelVersion, session_scope
from service.storage import LocalArtifactStore
from worker.tasks.training import run_training, split_by_subject

TINY = {"warmup_epochs": 1, "epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "crop": None}


@pytest.fixture
def dataset_id(settings, tmp_path, manifest_dataset) -> str:
    """A ready manifest dataset laid out in the store as the API leaves it."""
    source = manifest_dataset(tmp_path / "source", n_pairs=6, size=32)
    store = LocalArtifactStore(settings.artifact_dir)
    with session_scope(_engine(settings)) as session:
        dataset = Dataset(name="phantoms", layout=DatasetLayout.MANIFEST, status=DatasetStatus.READY, sha256="0" * 64,
                          size_bytes=1, n_pairs=6, storage_key="datasets/x",
                          info={"layout": "manifest", "path": "files/study/manifest.csv"})
        session.add(dataset)
        session.flush()
        shutil.copytree(source, store.dataset_dir(dataset.id) / "files" / "study")
        return dataset.id


def _engine(settings):
    from service.db import get_engine

    return get_engine(settings.database_url, settings.db_busy_timeout_ms)


def _job(settings, **params) -> str:
    with session_scope(_engine(settings)) as session:
        job = Job(kind=JobKind.TRAINING, params=params)
        session.add(job)
        session.flush()
        return job.id


@pytest.mark.parametrize(("architecture", "method"), [("transmorph", "nll"), ("diffusemorph", "adacs-no-tv")])
def test_other_architectures_and_methods_train_and_register(settings, dataset_id, load_job, architecture, method):
    job_id = _job(settings, dataset_id=dataset_id, model_name="other", architecture=architecture, method=method,
                  hyperparameters=TINY, val_fraction=0.34)
    run_training(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result["data"]["n_train_pairs"] == 4 and job.result["data"]["n_val_pairs"] == 2
    with session_scope(_engine(settings)) as session:
        version = session.query(ModelVersion).filter_by(source_job_id=job_id).one()
        assert version.card["architecture"] == architecture and version.card["method"] == method
    # Running the finished job again changes nothing and registers nothing new.
    run_training(job_id, settings=settings)
    with session_scope(_engine(settings)) as session:
        assert session.query(ModelVersion).filter_by(source_job_id=job_id).count() == 1


@pytest.mark.parametrize(("overrides", "words"), [
    ({"architecture": "transmorph", "architecture_options": {"wings": 2}}, "unknown options"),
    ({"architecture": "voxelmorph", "architecture_options": {"embed_dim": 48}}, "takes no options"),
    ({"hyperparameters": {"learning_rate": 1.0}}, "unknown hyperparameters"),
    ({"hyperparameters": TINY | {"supervision": "masks"}}, "unknown supervision 'masks'"),
    ({"hyperparameters": TINY | {"supervision": "labels", "labels": [7]}}, "labels [7] are in no training mask"),
    ({"dataset_id": "00000000-0000-0000-0000-000000000000"}, "is gone"),
    ({"devices": 3}, "batch_size 2 must be a multiple of devices 3"),
    ({"devices": 0}, "devices must be an integer from 1 to 8, got 0"),
])
def test_bad_parameters_fail_the_job_naming_the_problem(settings, dataset_id, load_job, overrides, words):
    params = {"dataset_id": dataset_id, "model_name": "bad", "architecture": "voxelmorph", "method": "none",
              "hyperparameters": TINY} | overrides
    job_id = _job(settings, **params)
    run_training(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert job.status == JobStatus.FAILED and words in job.error, job.error


def test_a_job_trains_across_two_processes(settings, dataset_id, load_job):
    """devices 2: two gloo processes of one pair each, rank 0 in the task (progress, the model)."""
    job_id = _job(settings, dataset_id=dataset_id, model_name="two", architecture="voxelmorph", method="adacs",
                  hyperparameters=TINY, val_fraction=0.34, devices=2)
    run_training(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result["devices"] == 2 and job.progress["global_step"] == 6 and "val_dice" in job.progress
    with session_scope(_engine(settings)) as session:
        card = session.query(ModelVersion).filter_by(source_job_id=job_id).one().card
    assert card["training"]["processes"] == 2 and card["training"]["updates"] == 6


def test_label_supervision_trains_from_the_job_and_a_stuck_run_is_warned(settings, dataset_id, load_job):
    """The job's label settings reach the trainer and the card; a run that cannot move (lr 1e-12) ends
    with a warning in its progress and in its card."""
    hp = TINY | {"supervision": "labels", "labels": [2], "label_weight": 0.5, "lr": 1e-12}
    job_id = _job(settings, dataset_id=dataset_id, model_name="labelled", architecture="voxelmorph", method="adacs",
                  hyperparameters=hp, val_fraction=0.34)
    run_training(job_id, settings=settings)
    job = load_job(settings, job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert len(job.progress["warnings"]) == 1 and "has not left the identity" in job.progress["warnings"][0]
    assert "label_dice" in job.progress["losses"]
    with session_scope(_engine(settings)) as session:
        card = session.query(ModelVersion).filter_by(source_job_id=job_id).one().card
    assert card["supervision"]["kind"] == "labels" and card["supervision"]["labels"] == [2]
    assert card["supervision"]["label_weight"] == 0.5 and card["warnings"] == job.progress["warnings"]


def test_validation_takes_whole_subjects():
    class Pair:
        def __init__(self, subject):
            self.subject_id = subject

    pairs = [Pair(s) for s in ("a", "a", "b", "c", "c", "d", "e")]
    train, val = split_by_subject(pairs, 0.4)
    assert {p.subject_id for p in val} == {"d", "e"} and {p.subject_id for p in train} == {"a", "b", "c"}
    assert split_by_subject(pairs, 0.0)[1] == [] and split_by_subject(pairs[:2], 0.5)[1] == []
    assert len(split_by_subject(pairs, 0.99)[0]) >= 1  # never every subject
