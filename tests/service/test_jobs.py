"""service/jobs/: one sender for the API and the reaper, and the typed params and results of each job kind."""

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.core.config import Settings
from service.jobs.registration import RegistrationParams, RegistrationResult
from service.jobs.schema import InvalidJobParams
from service.jobs.tasks import REGISTRATION_TASK, TRAINING_TASK, TaskSender, client_config
from service.jobs.training import TrainingParams, TrainingResult

ROOT = Path(__file__).resolve().parents[2]
JOB_ID = "00000000-0000-4000-8000-000000000001"
# Rows as the API has always written them: parsing and writing them back must change nothing.
REGISTRATION_ROW = {"model": "cardiac", "inputs": {"fixed": "inputs/fixed.nii.gz", "moving": "inputs/moving.zip"},
                    "fixed_series": None, "moving_series": "1.2.3", "fixed_frame": None, "moving_frame": 0}
TRAINING_ROW = {"dataset_id": "d0", "model_name": "cardiac", "architecture": "voxelmorph",
                "architecture_options": {"embed_dim": 48}, "method": "adacs",
                "hyperparameters": {"epochs": 2, "lr": 0.001, "micro_batch_size": None}, "val_fraction": 0.2}


def sent(settings: Settings) -> list[tuple[str, str, list, dict]]:
    """The messages in the embedded broker's folder: (task, queue, args, kwargs)."""
    messages = []
    for path in sorted((settings.broker_dir / "queue").glob("*.msg")):
        message = json.loads(path.read_text(encoding="utf-8"))
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        messages.append((message["headers"]["task"], message["properties"]["delivery_info"]["routing_key"], args,
                         kwargs))
    return messages


def test_the_sender_routes_each_kind_and_marks_the_reapers_copies(tmp_path):
    settings = Settings(data_dir=tmp_path, training_queue="gpu")
    tasks = TaskSender(settings)
    try:
        tasks.send("registration", JOB_ID)
        tasks.send("training", JOB_ID, only_if_queued=True)
    finally:
        tasks.close()
    assert sorted(sent(settings)) == sorted([(REGISTRATION_TASK, "inference", [JOB_ID], {}),
                                             (TRAINING_TASK, "gpu", [JOB_ID], {"only_if_queued": True})])


def test_a_sender_given_an_app_sends_with_it_and_leaves_it_open(tmp_path):
    calls = []

    class App:
        def send_task(self, name, **options):
            calls.append((name, options))

        def close(self):
            calls.append("closed")

    from service.db import JobKind

    tasks = TaskSender(Settings(data_dir=tmp_path), training_queue="train-1", app=App())
    tasks.send(JobKind.TRAINING, JOB_ID, only_if_queued=True)
    tasks.close()
    assert calls == [(TRAINING_TASK, {"args": [JOB_ID], "kwargs": {"only_if_queued": True}, "queue": "train-1"})]


def test_the_client_configuration_is_json_only_without_results(tmp_path):
    config = client_config(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/9"))
    assert (config["task_serializer"], config["accept_content"], config["result_backend"]) == ("json", ["json"], None)
    assert config["task_routes"][TRAINING_TASK] == {"queue": "training"} and config["broker_transport"] is None
    assert not (tmp_path / "broker").exists()  # only the filesystem transport needs folders


def test_the_jobs_modules_import_no_torch():
    code = ("import sys, service.jobs.tasks, service.jobs.registration, service.jobs.training; "
            "print(sorted(m for m in ('torch', 'worker', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("kind", "row"), [(RegistrationParams, REGISTRATION_ROW), (TrainingParams, TRAINING_ROW)])
def test_rows_the_api_wrote_read_and_write_back_unchanged(kind, row):
    assert kind.parse(row).to_row() == row


def test_registration_params_name_series_frames_and_leave_refinement_to_the_card():
    params = RegistrationParams.parse(REGISTRATION_ROW | {"model": "", "refine_steps": 0})
    assert params.model is None and params.series == {"fixed": None, "moving": "1.2.3"}
    assert params.frames == {"fixed": None, "moving": 0}
    assert params.to_row()["refine_steps"] == 0 and "refine_time_limit_s" not in params.to_row()


@pytest.mark.parametrize(("change", "message"), [
    ({"inputs": None}, "params['inputs'] must name at least 'fixed' and 'moving', got None"),
    ({"inputs": {"fixed": "a", "moving": "b", "other": "c"}}, "params['inputs'] maps ['fixed', 'moving', "
                                                             "'moving_mask', 'fixed_mask'] to relative paths"),
    ({"model": 3}, "params['model'] is a model reference string, got 3"),
    ({"fixed_frame": "0"}, "params: a *_series is a string and a *_frame an integer, got {'fixed': None, "
                           "'moving': '1.2.3'}, {'fixed': '0', 'moving': 0}"),
    ({"refine_time_limit_s": float("inf")}, "params: refine_steps is an integer >= 0 and refine_time_limit_s a "
                                            "number of seconds > 0, got None and inf"),
])
def test_bad_registration_params_are_refused_with_the_workers_message(change, message):
    with pytest.raises(InvalidJobParams) as refused:
        RegistrationParams.parse(REGISTRATION_ROW | change)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(("change", "message"), [
    ({"dataset_id": None, "method": ""}, "training params lack ['dataset_id', 'method']"),
    ({"dataset_id": 7}, "training params: dataset_id is a string, got 7"),
    ({"val_fraction": 1.0}, "hyperparameters and architecture_options must be objects and 0 <= val_fraction < 1"),
    ({"hyperparameters": [1]}, "hyperparameters and architecture_options must be objects"),
])
def test_bad_training_params_are_refused_with_the_workers_message(change, message):
    with pytest.raises(InvalidJobParams) as refused:
        TrainingParams.parse(TRAINING_ROW | change)
    assert str(refused.value).startswith(message)


def test_training_params_read_a_null_object_as_empty():
    params = TrainingParams.parse(TRAINING_ROW | {"architecture_options": None, "hyperparameters": None})
    assert (params.architecture_options, params.hyperparameters) == ({}, {})


def test_results_of_other_outcomes_and_older_rows_read_as_what_they_recorded():
    failed = {"error": {"code": "internal_error", "message": "boom", "http_status": 500, "details": {}}}
    assert RegistrationResult.read(failed) == RegistrationResult() and TrainingResult.read(None) == TrainingResult()
    older = RegistrationResult.read({"model": {"ref": "cardiac:1"}, "timings_s": {"total": 1},
                                     "outputs": {"report": {"file": "report.json", "sha256": "ab", "size_bytes": 2}}})
    assert older.model.ref == "cardiac:1" and older.outputs["report"].key is None
    assert older.to_row() == {"model": {"ref": "cardiac:1"}, "timings_s": {"total": 1.0},
                              "outputs": {"report": {"file": "report.json", "sha256": "ab", "size_bytes": 2}}}
