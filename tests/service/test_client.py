"""service/client.py and the remote ``adacs`` commands (service/cli_remote.py), over real HTTP.

Registrations run on the e2e stack of tests/e2e/test_registration_flow.py (the API in a thread, a real
Celery worker on Redis, the tiny model promoted as ``e2e``), on SQLite only: the client never sees
the database, and the e2e suite covers both backends. API keys run on a server with keys on and no
worker. Datasets and training jobs run on the stack of tests/e2e/test_training_flow.py (the API on
queues of its own, a dataset uploaded), on SQLite, with a real Celery worker on those queues. A
second API on the same database sends its trainings to a queue no worker reads: such a job stays
queued, so its event stream falls silent, or is cut by a relay in front of the server, exactly when
the test says. The SSE parser is tested on hand-written streams.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import sys
import threading
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from models.defaults import TRAIN_DEFAULTS
from service import cli_remote
from service.cli import main as adacs
from service.client import DOWNLOADS, AdacsApiError, AdacsClient, parse_sse
from service.main import create_app

# The e2e stacks are module fixtures of test modules (tests/ has no packages): reused, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
import test_registration_flow as e2e  # noqa: E402
import test_training_flow as training_e2e  # noqa: E402

stack, MODEL = e2e.stack, e2e.MODEL
training_stack = training_e2e.stack

ON_SQLITE = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
TRAINING_ON_SQLITE = pytest.mark.parametrize("training_stack", ["sqlite"], indirect=True)
TIMEOUT_S = 90
TINY = {"warmup_epochs": 0, "epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "crop": None}  # 4 updates
OUTPUT_FILES = {"displacement.nii.gz", "inverse_displacement.nii.gz", "jacobian.nii.gz", "warped.nii.gz",
                "warped_mask.nii.gz", "report.json", "preview.png"}


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
    assert set(paths) == {"displacement", "inverse_displacement", "jacobian", "warped", "warped_mask", "report",
                          "preview"}
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
    assert json.loads(capsys.readouterr().out)["id"] == job_id
    assert {p.name for p in (tmp_path / "three").iterdir()} == OUTPUT_FILES

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


# -- datasets and training jobs on the training e2e stack -----------------------------------------

class Relay:
    """A TCP relay in front of the real server whose open connections the test can cut, as a proxy that
    restarts or a network that drops would: the client then sees its event stream end mid-body."""

    def __init__(self, url: str) -> None:
        self.target = httpx.URL(url)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock, self.open = threading.Lock(), []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection((self.target.host, self.target.port))
            with self.lock:
                self.open += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)  # pass an orderly close on
        except OSError:  # cut
            pass

    def cut(self) -> None:
        """Close every connection open now; later ones are relayed as before."""
        with self.lock:
            sockets, self.open = self.open, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()
        self.cut()


@pytest.fixture(scope="module")
def trainer(training_stack, module_worker_process, tmp_path_factory):
    """A real Celery worker on the training stack's queues, shared by the tests that train."""
    log = tmp_path_factory.mktemp("trainer") / "worker.log"
    return module_worker_process(training_stack.env, training_stack.queues, log)


@pytest.fixture(scope="module")
def unserved(training_stack, live_server, redis_url):
    """A second API on the training stack's database and files whose training queue no worker reads: a
    job queued through it stays ``queued``, its event stream silent, until the test cancels it."""
    import redis

    queue = f"training-unserved-{secrets.token_hex(6)}"
    try:
        with live_server(create_app(training_stack.settings, training_queue=queue), training_stack.settings) as server:
            server.api = AdacsClient(server.url)
            yield server
            server.api.close()
    finally:
        redis.Redis.from_url(redis_url).delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


def spy_on_reads(client: AdacsClient) -> list[dict]:
    """Every job ``client.get_training_job`` reads from now on: how ``wait_training`` polls."""
    reads, read = [], client.get_training_job
    client.get_training_job = lambda job_id: reads.append(read(job_id)) or reads[-1]
    return reads


@TRAINING_ON_SQLITE
def test_datasets_upload_list_get_and_delete(training_stack, dataset_zip, tmp_path, capsys):
    archive, url = tmp_path / "study.zip", training_stack.url
    archive.write_bytes(dataset_zip)
    with AdacsClient(url) as client:
        dataset = client.upload_dataset(archive, name="hearts", layout="manifest")
        assert (dataset["name"], dataset["layout"], dataset["status"], dataset["n_pairs"]) == \
            ("hearts", "manifest", "ready", 8)
        assert (dataset["sha256"], dataset["size_bytes"]) == (hashlib.sha256(dataset_zip).hexdigest(), len(dataset_zip))
        assert client.get_dataset(dataset["id"]) == dataset
        assert dataset in client.list_datasets()["data"]
        client.delete_dataset(dataset["id"])
        with pytest.raises(AdacsApiError) as gone:
            client.get_dataset(dataset["id"])
        assert (gone.value.status_code, gone.value.code) == (404, "not_found")

    assert adacs(["datasets", "upload", str(archive), "--name", "study", "--layout", "manifest",
                  "--server", url]) == 0
    uploaded = capsys.readouterr().out.strip()
    assert adacs(["datasets", "list", "--server", url]) == 0
    rows = {row.split("\t")[0]: row.split("\t")[1:5] for row in capsys.readouterr().out.splitlines()[1:]}
    assert rows[uploaded] == ["study", "manifest", "ready", "8"] and dataset["id"] not in rows


@TRAINING_ON_SQLITE
def test_wait_training_follows_the_event_stream_to_its_end(training_stack, trainer, dataset_zip, tmp_path):
    archive = tmp_path / "study.zip"
    archive.write_bytes(dataset_zip)
    with AdacsClient(training_stack.url) as client:
        dataset = client.upload_dataset(archive)
        job = client.train(dataset["id"], "streamed", hyperparameters=TINY)
        assert job["hyperparameters"]["steps_per_epoch"] == 2 and job["model_name"] == "streamed"

        kinds, events = [], client.training_events

        def recorded(job_id, silence_s=None):
            for kind, body in events(job_id, silence_s):
                kinds.append(kind)
                yield kind, body

        client.training_events, reads, seen = recorded, spy_on_reads(client), []
        final = client.wait_training(job["id"], timeout=TIMEOUT_S, on_progress=seen.append)
        assert final["status"] == "succeeded", f"{final['error']}\n{trainer.tail()}"
        assert final["model_version"] == "streamed:1" and seen[-1] == final
        assert reads == [] and kinds[-1] == "end" and set(kinds[:-1]) == {"progress"}  # the stream's, all of it
        # How many snapshots the stream catches depends on the machine's speed; they come in order.
        steps = [body["progress"].get("global_step", 0) for body in seen]
        order = [("queued", "running", "succeeded").index(body["status"]) for body in seen]
        assert steps == sorted(steps) and steps[-1] == final["progress"]["total_steps"] == 4
        assert order == sorted(order)
        assert [(kind, body["id"]) for kind, body in events(job["id"])] == [("end", job["id"])]  # finished: at once

        # Cancelled while it runs (50,000 updates: it does not end by itself first).
        asked = []

        def cancel_once_running(body):
            if body["status"] == "running" and body["progress"].get("global_step", 0) >= 1 and not asked:
                asked.append(client.cancel_training_job(body["id"]))

        endless = client.train(dataset["id"], "cancelled", hyperparameters=TINY | {"epochs": 10_000,
                                                                                   "steps_per_epoch": 5})
        final = client.wait_training(endless["id"], timeout=TIMEOUT_S, on_progress=cancel_once_running)
        assert asked[0]["cancel_requested"] and asked[0]["status"] in ("running", "cancelled")  # (a quick worker)
        assert final["status"] == "cancelled" and final["model_version"] is None, trainer.tail()
        with pytest.raises(AdacsApiError) as finished:
            client.cancel_training_job(endless["id"])
        assert (finished.value.status_code, finished.value.code) == (409, "job_finished")


@TRAINING_ON_SQLITE
@pytest.mark.parametrize("fault", ["cut", "silent"])
def test_wait_training_reads_the_job_when_its_stream_drops_then_follows_it_again(training_stack, unserved, fault):
    """A job no worker takes stays queued, so its stream sends one event and then nothing until the test
    cancels it. The stream is cut (the relay closes the connection) or stays silent past
    ``stream_timeout_s``; the client must read the job once, then subscribe again and get the end."""
    job = unserved.api.train(training_stack.dataset_id, "never-trained", hyperparameters=TINY)
    with Relay(unserved.url) as relay, \
            AdacsClient(relay.url, stream_timeout_s=1.0 if fault == "silent" else 60.0) as client:
        reads, seen = spy_on_reads(client), []

        def on_progress(body):
            seen.append(body["status"])
            if reads and body["status"] == "queued":  # read after the fault: end it (queued: cancelled at once)
                assert unserved.api.cancel_training_job(body["id"])["status"] == "cancelled"
            elif fault == "cut" and not reads:  # the first stream's first event
                relay.cut()

        final = client.wait_training(job["id"], timeout=TIMEOUT_S, on_progress=on_progress, poll_s=0.05)
    assert final["status"] == "cancelled" and [read["status"] for read in reads] == ["queued"]
    # The stream's first event (unless the silence came first on a slow machine), the read, the new stream's end.
    assert seen[-2:] == ["queued", "cancelled"] and set(seen[:-1]) == {"queued"}


@TRAINING_ON_SQLITE
def test_an_unknown_training_job_is_not_found(training_stack):
    with AdacsClient(training_stack.url) as client:
        for job_id in (str(uuid.uuid4()), "no-such-job"):
            calls = {"get": client.get_training_job, "cancel": client.cancel_training_job,
                     "events": lambda job_id: list(client.training_events(job_id)),
                     "wait": lambda job_id: client.wait_training(job_id, timeout=10)}
            for name, call in calls.items():
                with pytest.raises(AdacsApiError) as unknown:
                    call(job_id)
                assert (unknown.value.status_code, unknown.value.code) == (404, "not_found"), name
                assert f"no training job with id '{job_id}'" in unknown.value.detail, name


@TRAINING_ON_SQLITE
def test_adacs_train_remote_cancel_wait(training_stack, trainer, unserved, capsys):
    url, dataset = training_stack.url, training_stack.dataset_id
    assert adacs(["train-remote", "--server", unserved.url, "--dataset", dataset, "--model-name", "queued"]) == 0
    queued = capsys.readouterr().out.strip()
    assert adacs(["cancel", queued, "--server", unserved.url]) == 0  # nobody took it: cancelled in the queue
    assert f"training job {queued}: cancel requested (status cancelled)" in capsys.readouterr().err

    argv = ["train-remote", "--server", url, "--dataset", dataset, "--model-name", "heart", "--warmup-epochs", "0",
            "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2", "--lr", "0.001", "--no-bidir",
            "--crop", "32", "--val-fraction", "0.25", "--wait", "--timeout", str(TIMEOUT_S)]
    assert adacs(argv) == 0, trainer.tail()
    out, err = capsys.readouterr()
    job = training_stack.api.get_training_job(out.strip())
    assert f"training job {job['id']} succeeded: model heart:1" in err and "upd" in err  # the progress bar's unit
    hyperparameters = {key: job["hyperparameters"][key] for key in ("epochs", "lr", "bidir", "crop")}
    assert hyperparameters == {"epochs": 2, "lr": 0.001, "bidir": False, "crop": 32} and job["val_fraction"] == 0.25
    # --arch and --method left out: the server's defaults apply.
    assert (job["architecture"], job["method"]) == (TRAIN_DEFAULTS.arch, TRAIN_DEFAULTS.method)
    assert adacs(["wait", job["id"], "--server", url, "--json"]) == 0  # not a registration: a training
    assert json.loads(capsys.readouterr().out)["model_version"] == "heart:1"
    assert adacs(["cancel", job["id"], "--server", url]) == 1
    assert "HTTP 409 job_finished" in capsys.readouterr().err
