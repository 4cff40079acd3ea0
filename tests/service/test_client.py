"""service/client.py and the remote ``adacs`` commands (service/cli_remote.py), over real HTTP.

Registrations run on the e2e stack of tests/e2e/test_registration_flow.py (the API in a thread, a real
Celery worker on Redis, the tiny model promoted as ``e2e``), on SQLite only: the client never sees
the database, and the e2e suite covers both backends. API keys run on a server with keys on and no
worker. Datasets and training jobs run on a stand-in server that answers as the contract of
``/v1/datasets`` and ``/v1/training-jobs`` says (progress events, then ``end``), so the client's
event-stream handling is tested over real HTTP too. The SSE parser is tested on hand-written streams.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import pytest
import SimpleITK as sitk
from fastapi import Body, FastAPI, Form, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from service import cli_remote
from service.cli import main as adacs
from service.client import DOWNLOADS, AdacsApiError, AdacsClient, parse_sse

# The e2e stack is a module fixture of a test module (tests/ has no packages): reused, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
import test_registration_flow as e2e  # noqa: E402

stack, MODEL = e2e.stack, e2e.MODEL

ON_SQLITE = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
TIMEOUT_S = 90
OUTPUT_FILES = {"displacement.nii.gz", "warped.nii.gz", "warped_mask.nii.gz", "report.json", "preview.png"}


@pytest.fixture(autouse=True)
def no_server_from_the_environment(monkeypatch):
    """The developer's own ``$ADACS_SERVER`` or key must not leak into the commands under test."""
    monkeypatch.delenv("ADACS_SERVER", raising=False)
    monkeypatch.delenv("ADACS_API_KEY", raising=False)


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


# -- without a server ----------------------------------------------------------------------------------

def test_sse_parser_follows_the_event_stream_rules():
    stream = [": keep-alive", "event: progress", 'data: {"status":', 'data:"running"}', "", "", "id: 7",
              "retry: 100", "", "data", "", "event:end", "data: {}", "", "event: progress", "data: cut off"]
    assert list(parse_sse(stream)) == [("progress", '{"status":\n"running"}'), ("message", ""), ("end", "{}")]


def test_the_client_knows_every_download_the_server_has():
    from service.api.routes.registrations import DOWNLOADS as SERVER_DOWNLOADS

    assert DOWNLOADS == tuple(SERVER_DOWNLOADS) == cli_remote.OUTPUTS


def test_error_bodies_of_every_shape_become_one_message():
    api = AdacsApiError.from_response(httpx.Response(409, json={"detail": "still running", "code": "job_running"}))
    assert (api.status_code, api.code, str(api)) == (409, "job_running", "HTTP 409 job_running: still running")
    invalid = httpx.Response(422, json={"detail": [{"loc": ["body", "fixed"], "msg": "Field required"}]})
    assert str(AdacsApiError.from_response(invalid)) == "HTTP 422 validation_error: body.fixed: Field required"
    proxy = AdacsApiError.from_response(httpx.Response(502, text="<html>upstream down</html>"))
    assert (proxy.code, proxy.detail) == ("bad_gateway", "<html>upstream down</html>")


# -- registrations on the e2e stack ------------------------------------------------------------------

@ON_SQLITE
def test_register_wait_and_download_all_give_the_servers_files(stack, image_pair, tmp_path):
    seen = []
    with AdacsClient(stack.url) as client:
        job = client.register(**image_pair)
        assert job["status"] in ("queued", "running", "succeeded") and job["model"] == MODEL
        job = client.wait_registration(job["id"], timeout=TIMEOUT_S, poll_s=0.1, on_progress=seen.append)
        assert job["status"] == "succeeded", f"{job['error']}\n{stack.worker.tail()}"
        paths = client.download_all(job["id"], tmp_path / "out")
        (tmp_path / "one").mkdir()
        one = client.download(job["id"], "warped-mask", tmp_path / "one")  # a folder: the server's file name

    assert seen[-1] == job and one == tmp_path / "one" / "warped_mask.nii.gz"
    assert set(paths) == {"displacement", "warped", "warped_mask", "report", "preview"}
    assert {p.name for p in (tmp_path / "out").iterdir()} == OUTPUT_FILES  # no .part file left behind
    served = stack.client.get(f"/v1/registrations/{job['id']}/warped-mask").content
    assert paths["warped_mask"].read_bytes() == served == one.read_bytes()
    assert hashlib.sha256(served).hexdigest() == job["outputs"]["warped_mask"]["sha256"]
    assert read(paths["warped_mask"]).any() and read(paths["displacement"]).shape[-1] == 2
    assert json.loads(paths["report"].read_text(encoding="utf-8"))["model"]


@ON_SQLITE
def test_refusals_come_back_as_one_error_with_the_servers_code(stack, image_pair, tmp_path):
    with AdacsClient(stack.url) as client:
        with pytest.raises(AdacsApiError) as unknown:
            client.get_registration("no-such-job")
        assert unknown.value.status_code == 404 and unknown.value.code == "not_found"
        assert str(unknown.value).startswith("HTTP 404 not_found: no registration with id 'no-such-job'")
        with pytest.raises(AdacsApiError) as no_model:
            client.register(image_pair["fixed"], image_pair["moving"], model="absent")
        assert no_model.value.status_code == 404 and "absent" in no_model.value.detail
        job = client.register(image_pair["fixed"], image_pair["moving"], wait=60)  # no masks: no warped mask
        job = client.wait_registration(job["id"], timeout=TIMEOUT_S, poll_s=0.1)
        with pytest.raises(AdacsApiError) as no_mask:
            client.download(job["id"], "warped-mask", tmp_path)
        assert no_mask.value.code == "no_output" and "no moving_mask" in no_mask.value.detail
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(ValueError, match="unknown output 'warped'"):
            client.download(job["id"], "warped", tmp_path)
        with pytest.raises(AdacsApiError) as no_stream:
            client.wait_training("no-such-job", timeout=5)
        assert no_stream.value.status_code == 404


@ON_SQLITE
def test_adacs_submit_wait_out_then_download_and_wait(stack, image_pair, tmp_path, capsys, monkeypatch):
    files = [f"--{role.replace('_', '-')}={path}" for role, path in image_pair.items()]
    assert adacs(["submit", "--server", stack.url, *files, "--wait", "--out", str(tmp_path / "submit")]) == 0
    out, err = capsys.readouterr()
    job_id = out.strip()
    assert {p.name for p in (tmp_path / "submit").iterdir()} == OUTPUT_FILES
    assert "succeeded" in err and "wrote " in err

    monkeypatch.setenv("ADACS_SERVER", stack.url)  # from here on the server comes from the environment
    assert adacs(["download", job_id, "--out", str(tmp_path / "two"), "--what", "warped-mask", "report"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "two" / f) for f in ("warped_mask.nii.gz",
                                                                                   "report.json")]
    assert (tmp_path / "two" / "warped_mask.nii.gz").read_bytes() == \
        (tmp_path / "submit" / "warped_mask.nii.gz").read_bytes()
    assert adacs(["wait", job_id, "--json", "--out", str(tmp_path / "three")]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == job_id and len(list((tmp_path / "three").iterdir())) == 5

    assert adacs(["submit", *files[:2], "--model", "absent"]) == 1
    assert "adacs submit: error: HTTP 404 not_found: " in capsys.readouterr().err
    assert adacs(["wait", "no-such-job"]) == 1
    assert "no registration or training job with id 'no-such-job'" in capsys.readouterr().err


@ON_SQLITE
def test_adacs_models_list_and_promote(stack, capsys):
    assert adacs(["models", "list", "--server", stack.url]) == 0
    assert f"{MODEL}\t1\tproduction=1" in capsys.readouterr().out.splitlines()
    assert adacs(["models", "promote", MODEL, "1", "--stage", "staging", "--server", stack.url]) == 0
    assert capsys.readouterr().out.strip() == f"{MODEL}@staging -> {MODEL}:1"
    with AdacsClient(stack.url) as client:
        assert client.get_model(MODEL)["stages"] == {"production": 1, "staging": 1}


def test_a_wrong_api_key_is_refused_with_its_code(live_server, sqlite_url, tmp_path, capsys):
    from service.cli_keys import create_api_key
    from service.core.config import Settings
    from service.db import make_engine, session_scope
    from service.main import create_app

    engine = make_engine(sqlite_url)
    with session_scope(engine) as session:
        key = create_api_key(session, "reader", ["register"])
    engine.dispose()
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, api_keys_enabled=True)
    with live_server(create_app(settings), settings) as server:
        with AdacsClient(server.url, api_key="adacs_wrong") as client, pytest.raises(AdacsApiError) as wrong:
            client.list_models()
        assert (wrong.value.status_code, wrong.value.code) == (401, "unknown_api_key")
        with AdacsClient(server.url, api_key=key) as client:
            assert client.list_models() == {"data": [], "count": 0}
            with pytest.raises(AdacsApiError) as scope:
                client.promote("cardiac", 1)
            assert (scope.value.status_code, scope.value.code) == (403, "missing_scope")
        assert adacs(["models", "list", "--server", server.url]) == 1
        assert "HTTP 401 missing_api_key" in capsys.readouterr().err


# -- datasets and training jobs on a stand-in server ------------------------------------------------

def training_job(job_id: str, status: str, step: int = 0, **fields) -> dict:
    progress = {"phase": "adacs", "epoch": step // 2, "epochs": 2, "global_step": step, "total_steps": 4,
                "m_t": 0.5 + step / 10, "val_dice": 70.0 + step}
    return {"id": job_id, "status": status, "progress": progress, "error": None, "model_name": "heart",
            "model_version": "heart:1" if status == "succeeded" else None, **fields}


def contract_app(seen: dict) -> FastAPI:
    """The routes the lead is writing, as the contract states them: ``t-full`` streams every event,
    ``t-drop`` drops its stream after one event (and is found finished when read)."""
    app = FastAPI()

    @app.post("/v1/datasets", status_code=201)
    async def upload_dataset(file: UploadFile, name: Annotated[str | None, Form()] = None,
                             layout: Annotated[str | None, Form()] = None):
        seen["dataset"] = (file.filename, await file.read(), name, layout)
        return {"id": "ds-1", "name": name, "layout": layout or "acdc", "status": "ready", "n_pairs": 3}

    @app.get("/v1/datasets")
    def list_datasets():
        return {"data": [{"id": "ds-1", "name": "hearts", "layout": "acdc", "status": "ready", "n_pairs": 3}],
                "count": 1}

    @app.post("/v1/training-jobs", status_code=202)
    def train(body: Annotated[dict, Body()]):
        seen["train"] = body
        return training_job("t-full", "queued")

    @app.get("/v1/training-jobs/{job_id}")
    def read_job(job_id: str):
        if job_id not in ("t-full", "t-drop"):
            return JSONResponse({"detail": f"no training job {job_id!r}", "code": "not_found"}, status_code=404)
        return training_job(job_id, "succeeded", 4)

    @app.post("/v1/training-jobs/{job_id}/cancel", status_code=202)
    def cancel(job_id: str):
        return training_job(job_id, "running", 1, cancel_requested=True)

    @app.get("/v1/training-jobs/{job_id}/events")
    async def events(job_id: str):
        if job_id not in ("t-full", "t-drop"):
            return JSONResponse({"detail": f"no training job {job_id!r}", "code": "not_found"}, status_code=404)

        async def stream():
            yield ": connected\n\n"
            for step in range(1 if job_id == "t-drop" else 4):
                yield f"event: progress\ndata: {json.dumps(training_job(job_id, 'running', step))}\n\n"
                await asyncio.sleep(0.01)
            if job_id == "t-full":
                yield f"event: end\ndata: {json.dumps(training_job(job_id, 'succeeded', 4))}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def contract(live_server):
    seen: dict = {}
    with live_server(contract_app(seen)) as server:
        server.seen = seen
        yield server


def test_wait_training_follows_the_stream_and_falls_back_to_polling(contract):
    with AdacsClient(contract.url) as client:
        steps = []
        job = client.wait_training("t-full", timeout=10,
                                   on_progress=lambda job: steps.append(job["progress"]["global_step"]))
        assert job["status"] == "succeeded" and job["model_version"] == "heart:1" and steps == [0, 1, 2, 3, 4]
        events = list(client.training_events("t-full"))
        assert [e for e, _ in events] == ["progress"] * 4 + ["end"]
        dropped = []
        job = client.wait_training("t-drop", timeout=10, on_progress=dropped.append, poll_s=0.01)
        assert job["status"] == "succeeded" and [j["status"] for j in dropped] == ["running", "succeeded"]
        with pytest.raises(AdacsApiError) as unknown:
            client.wait_training("t-none", timeout=10)
        assert (unknown.value.status_code, unknown.value.code) == (404, "not_found")


def test_adacs_train_remote_wait_and_cancel(contract, capsys):
    argv = ["train-remote", "--server", contract.url, "--dataset", "ds-1", "--model-name", "heart", "--epochs", "2",
            "--lr", "0.001", "--no-bidir", "--crop", "64", "--val-fraction", "0.25", "--wait"]
    assert adacs(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "t-full" and "succeeded: model heart:1" in err and "m_t=0.9" in err
    # --arch and --method left out: the server's defaults apply (the body does not restate them).
    assert contract.seen["train"] == {"dataset_id": "ds-1", "model_name": "heart", "val_fraction": 0.25,
                                      "hyperparameters": {"epochs": 2, "lr": 0.001, "bidir": False, "crop": 64}}
    assert adacs(["wait", "t-drop", "--server", contract.url, "--json"]) == 0  # not a registration: a training
    assert json.loads(capsys.readouterr().out)["model_version"] == "heart:1"
    assert adacs(["cancel", "t-full", "--server", contract.url]) == 0
    assert "cancel requested (status running)" in capsys.readouterr().err


def test_adacs_datasets_upload_and_list(contract, tmp_path, capsys):
    archive = tmp_path / "hearts.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: the stand-in does not unpack it
    assert adacs(["datasets", "upload", str(archive), "--name", "hearts", "--layout", "acdc",
                  "--server", contract.url]) == 0
    assert capsys.readouterr().out.strip() == "ds-1"
    assert contract.seen["dataset"] == ("hearts.zip", archive.read_bytes(), "hearts", "acdc")
    assert adacs(["datasets", "list", "--server", contract.url]) == 0
    assert capsys.readouterr().out.splitlines()[1].split("\t")[:5] == ["ds-1", "hearts", "acdc", "ready", "3"]
