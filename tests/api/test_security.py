"""Who may see what, over real HTTP with API keys on (DESIGN "Who may see what", issue 11).

Two users (``alice``, ``bob``, each with ``register`` and ``train``) and an operator (``admin``):
another owner's registration, training job, dataset and model answer 404 for reads, downloads,
cancels and deletes, and are missing from lists; the admin sees everything; changing the registry
needs ``admin``; the key is decided from the headers before a byte of the body is read; stored files
are owner-only. Jobs are queued without a worker (the embedded broker accepts them); a finished
registration is written to the database and the store directly, as a worker would.
"""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from service.access import principal_of_key
from service.cli_keys import create_api_key
from service.db import ApiKey, Job, JobStatus, utcnow
from service.registry import promote, register_version
from service.storage import LocalArtifactStore

SCOPES = {"alice": ["register", "train"], "bob": ["register", "train"], "admin": ["admin"]}
UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def keys(db_session) -> dict[str, str]:
    with db_session() as session:
        return {name: create_api_key(session, name, scopes) for name, scopes in SCOPES.items()}


@pytest.fixture(scope="module")
def server(serve):
    return serve(api_keys_enabled=True, max_upload_bytes=256 * 1024, max_active_trainings_per_owner=2)


def as_(keys: dict[str, str], name: str) -> dict[str, str]:
    return {"X-API-Key": keys[name]}


@pytest.fixture(scope="module")
def world(server, keys, db_session, artifact_dirs, image_pair, dataset_zip) -> dict[str, str]:
    """Alice's registration (succeeded, with an output), dataset, training job and private model; a shared model."""
    client, made = server.client, {}
    files = {role: (path.name, path.read_bytes()) for role, path in image_pair.items() if role in ("fixed", "moving")}
    store = LocalArtifactStore(server.settings.artifact_dir)
    with db_session() as session:
        principals = {k.name: principal_of_key(k) for k in session.scalars(select(ApiKey))}
        register_version(session, store, "shared", artifact_dirs[0], shared=True)
        promote(session, "shared", 1)
        register_version(session, store, "alice-model", artifact_dirs[1], owner=principals["alice"])
    response = client.post("/v1/registrations", files=files, data={"model": "shared"}, headers=as_(keys, "alice"))
    assert response.status_code == 202, response.text
    made["registration"] = response.json()["id"]
    sha = store.put_bytes(b'{"dice": {}}')
    with db_session() as session:  # finished, as a worker would leave it
        job = session.get(Job, made["registration"])
        job.status, job.finished_at = JobStatus.SUCCEEDED, utcnow()
        job.result = {"outputs": {"report": {"file": "report.json", "sha256": sha, "size_bytes": 12}}}
    response = client.post("/v1/datasets", files={"file": ("study.zip", dataset_zip)}, headers=as_(keys, "alice"))
    assert response.status_code == 201, response.text
    made["dataset"] = response.json()["id"]
    body = {"dataset_id": made["dataset"], "model_name": "alice-model", "hyperparameters": {"epochs": 1}}
    response = client.post("/v1/training-jobs", json=body, headers=as_(keys, "alice"))
    assert response.status_code == 202, response.text
    made["training"] = response.json()["id"]
    return made


# -- owners ----------------------------------------------------------------------------------------

def test_another_owners_registration_is_invisible(server, keys, world):
    job, client = world["registration"], server.client
    url = f"/v1/registrations/{job}"
    assert client.get(url, headers=as_(keys, "alice")).status_code == 200
    assert client.get(f"{url}/report", headers=as_(keys, "alice")).content == b'{"dice": {}}'
    for path in (url, f"{url}/report", f"{url}/displacement"):
        response = client.get(path, headers=as_(keys, "bob"))
        assert response.status_code == 404 and response.json()["code"] == "not_found", path
    assert client.get(url, headers=as_(keys, "bob")).json() == client.get(
        f"/v1/registrations/{UNKNOWN}", headers=as_(keys, "bob")).json() | {
        "detail": f"no registration with id {job!r}; list them with GET /v1/registrations"}  # same as missing
    listed = client.get("/v1/registrations", headers=as_(keys, "bob")).json()
    assert job not in [j["id"] for j in listed["data"]] and listed["count"] == 0
    assert job in [j["id"] for j in client.get("/v1/registrations", headers=as_(keys, "admin")).json()["data"]]
    assert client.get(f"{url}/report", headers=as_(keys, "admin")).status_code == 200


def test_another_owners_registration_cannot_be_deleted(server, keys, world):
    url = f"/v1/registrations/{world['registration']}"
    assert server.client.delete(url, headers=as_(keys, "bob")).status_code == 404
    assert server.client.get(url, headers=as_(keys, "alice")).status_code == 200  # still there


def test_another_owners_cine_registration_is_invisible_and_cannot_be_deleted(server, keys, world, tmp_path):
    import nibabel as nib
    import numpy as np

    from models.data.phantom_cine import make_phantom_cine

    cine = make_phantom_cine(frames=3, slices=1, size=32, seed=4)
    nib.save(nib.Nifti1Image(np.transpose(cine.images, (3, 2, 1, 0)), np.eye(4)), str(tmp_path / "cine.nii.gz"))
    nib.save(nib.Nifti1Image(np.transpose(cine.masks[0], (2, 1, 0)), np.eye(4)), str(tmp_path / "mask.nii.gz"))
    files = {"cine": ("cine.nii.gz", (tmp_path / "cine.nii.gz").read_bytes()),
             "reference_mask": ("mask.nii.gz", (tmp_path / "mask.nii.gz").read_bytes())}
    client = server.client
    response = client.post("/v1/cine-registrations", files=files, data={"model": "shared"}, headers=as_(keys, "alice"))
    assert response.status_code == 202, response.text
    url = f"/v1/cine-registrations/{response.json()['id']}"
    assert client.get(url, headers=as_(keys, "alice")).status_code == 200
    for path in (url, f"{url}/report", f"{url}/warped-masks"):
        response = client.get(path, headers=as_(keys, "bob"))
        assert response.status_code == 404 and response.json()["code"] == "not_found", path
    assert client.delete(url, headers=as_(keys, "bob")).status_code == 404
    assert client.get("/v1/cine-registrations", headers=as_(keys, "bob")).json()["count"] == 0
    assert client.get("/v1/cine-registrations", headers=as_(keys, "admin")).json()["count"] == 1
    assert client.get(url, headers=as_(keys, "alice")).status_code == 200  # still there


def test_another_owners_dataset_is_invisible_unusable_and_undeletable(server, keys, world):
    url, client = f"/v1/datasets/{world['dataset']}", server.client
    assert client.get(url, headers=as_(keys, "bob")).status_code == 404
    assert client.get("/v1/datasets", headers=as_(keys, "bob")).json() == {"data": [], "count": 0}
    assert client.delete(url, headers=as_(keys, "bob")).status_code == 404
    body = {"dataset_id": world["dataset"], "model_name": "bobs", "hyperparameters": {"epochs": 1}}
    response = client.post("/v1/training-jobs", json=body, headers=as_(keys, "bob"))
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert client.get(url, headers=as_(keys, "admin")).status_code == 200
    assert client.get(url, headers=as_(keys, "alice")).status_code == 200


def test_another_owners_training_job_is_invisible_and_uncancellable(server, keys, world):
    url, client = f"/v1/training-jobs/{world['training']}", server.client
    for method, path in (("get", url), ("get", f"{url}/events"), ("post", f"{url}/cancel")):
        response = getattr(client, method)(path, headers=as_(keys, "bob"))
        assert response.status_code == 404, (method, path)
    assert client.get("/v1/training-jobs", headers=as_(keys, "bob")).json()["count"] == 0
    job = client.get(url, headers=as_(keys, "alice")).json()
    assert job["status"] == "queued" and not job["cancel_requested"]
    assert client.get(url, headers=as_(keys, "admin")).status_code == 200


def test_another_owners_model_is_invisible_and_unusable(server, keys, world, image_pair):
    client = server.client
    names = [m["name"] for m in client.get("/v1/models", headers=as_(keys, "bob")).json()["data"]]
    assert "shared" in names and "alice-model" not in names
    assert "alice-model" in [m["name"] for m in client.get("/v1/models", headers=as_(keys, "alice")).json()["data"]]
    for path in ("/v1/models/alice-model", "/v1/models/alice-model/versions/1",
                 "/v1/models/alice-model/versions/1/artifact"):
        response = client.get(path, headers=as_(keys, "bob"))
        assert response.status_code == 404 and "alice-model" not in response.json()["detail"].split(";")[1], path
        assert client.get(path, headers=as_(keys, "alice")).status_code == 200
    files = {role: (p.name, p.read_bytes()) for role, p in image_pair.items() if role in ("fixed", "moving")}
    response = client.post("/v1/registrations", files=files, data={"model": "alice-model:1"},
                           headers=as_(keys, "bob"))
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_a_training_adds_versions_only_to_its_owners_models(server, keys, world):
    client, body = server.client, {"dataset_id": world["dataset"], "hyperparameters": {"epochs": 1}}
    response = client.post("/v1/training-jobs", json=body | {"model_name": "shared"}, headers=as_(keys, "alice"))
    assert response.status_code == 403 and "shared catalogue" in response.json()["detail"]
    response = client.post("/v1/training-jobs", json=body | {"dataset_id": UNKNOWN, "model_name": "alice-model"},
                           headers=as_(keys, "bob"))
    assert response.status_code == 409 and response.json()["detail"].startswith("the model name 'alice-model' is")


def test_changing_the_registry_needs_admin(server, keys, world, artifact_dirs, zip_folder):
    client = server.client
    upload = {"file": ("model.zip", zip_folder(artifact_dirs[1]), "application/zip")}
    changes = [("post", "/v1/models", {"data": {"name": "shared"}, "files": upload}),
               ("post", "/v1/models/alice-model/versions/1/promote", {"json": {"stage": "production"}}),
               ("delete", "/v1/models/shared/stages/production", {}),
               ("delete", "/v1/models/alice-model/versions/1", {})]
    for method, path, kwargs in changes:
        for user in ("alice", "bob"):  # not even the owner of alice-model: promotion is the operator's
            response = getattr(client, method)(path, headers=as_(keys, user), **kwargs)
            assert response.status_code == 403 and response.json()["code"] == "missing_scope", (path, user)
    assert client.get("/v1/models/shared", headers=as_(keys, "bob")).json()["stages"] == {"production": 1}
    response = client.post("/v1/models/alice-model/versions/1/promote", json={"stage": "staging"},
                           headers=as_(keys, "admin"))
    assert response.status_code == 200
    response = client.post("/v1/models", data={"name": "from-admin"}, files=upload, headers=as_(keys, "admin"))
    assert response.status_code == 201
    assert "from-admin" in [m["name"] for m in client.get("/v1/models", headers=as_(keys, "bob")).json()["data"]]


def test_unfinished_trainings_per_owner_are_capped(server, keys, world):
    body = {"dataset_id": world["dataset"], "model_name": "alice-model", "hyperparameters": {"epochs": 1}}
    answers = [server.client.post("/v1/training-jobs", json=body, headers=as_(keys, "alice")) for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 429]  # the world's job plus one: the cap of 2
    assert answers[1].json()["code"] == "too_many_active_jobs"
    huge = body | {"hyperparameters": {"epochs": 100_000, "steps_per_epoch": 100_000}}
    response = server.client.post("/v1/training-jobs", json=huge, headers=as_(keys, "alice"))
    assert response.status_code == 422 and response.json()["code"] == "budget_too_large"


# -- auth before the body --------------------------------------------------------------------------

def _raw_request(url: str, head: str, sent_body: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``head`` and only ``sent_body`` of a longer declared body; the answer and how long it took."""
    host, port = url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(head.encode("latin-1") + sent_body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, time.monotonic() - start


@pytest.mark.parametrize(("key", "status"), [(None, 401), ("register-only", 403)])
def test_a_large_upload_is_refused_from_its_headers(server, keys, db_session, key, status):
    """50 MB declared, 64 KiB sent: the answer comes without the rest (and 401/403 before the 413 it would be)."""
    if key == "register-only":
        with db_session() as session:
            keys[key] = keys.get(key) or create_api_key(session, key, ["register"])
    declared, sent = 50_000_000, b"-" * 65536
    header = f"X-API-Key: {keys[key]}\r\n" if key else ""
    path = "/v1/registrations" if key is None else "/v1/training-jobs"
    head = (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
            f"{header}Content-Length: {declared}\r\n\r\n")
    answer, seconds = _raw_request(server.url, head, sent)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b'"code":"missing_api_key"' in answer or b'"code":"missing_scope"' in answer
    assert seconds < 5  # it did not wait for 50 MB that never came


def test_a_malformed_body_without_a_key_is_401_not_400(server):
    response = server.client.post("/v1/registrations", content=b"\x00not multipart",
                                  headers={"Content-Type": "multipart/form-data; boundary=nope"})
    assert response.status_code == 401
    response = server.client.post("/v1/training-jobs", content=b"{not json",
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert server.client.get("/v1/no-such-route").status_code == 401  # probing paths tells a stranger nothing


# -- private files ---------------------------------------------------------------------------------

def _loose(root: Path) -> list[str]:
    """Everything under ``root`` that its group or others could read, write or enter."""
    return [f"{p} {stat.filemode(p.lstat().st_mode)}" for p in [root, *root.rglob("*")]
            if not p.is_symlink() and p.lstat().st_mode & 0o077]


def test_stored_uploads_and_folders_are_owner_only(server, world):
    root = server.settings.artifact_dir
    assert (root / "jobs" / world["registration"] / "inputs").is_dir()  # the world put files there
    assert any((root / "objects").rglob("*")) and any((root / "datasets").rglob("*.nii.gz"))
    assert _loose(root) == []
    assert _loose(server.settings.data_dir) == []
