"""Schemathesis (the PyPI package) against the API's own ``/openapi.json``, over real HTTP, keys on.

Every operation is called with schema-driven valid and invalid data (examples, coverage, fuzzing and
stateful phases), with a fixed seed and a bounded number of cases, as the admin. A finished
registration, a dataset, a training job and a model exist beforehand and their ids are given to
Schemathesis, so reads and downloads reach real rows, not only 404s. The run must find no server
error, no undocumented status code, no response that breaks its declared schema, content type or
headers. One run on SQLite and one on PostgreSQL (whose integer and text limits differ).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli_keys import create_api_key
from service.db import Job, JobStatus, utcnow
from service.registry import promote, register_version
from service.storage import LocalArtifactStore

SEED = 20261202
MAX_EXAMPLES = 15
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance")


@pytest.fixture(scope="module")
def fuzzed(serve, db_session, artifact_dirs, image_pair, dataset_zip) -> tuple[object, str, dict[str, str]]:
    """A server with keys on, an admin key, and one of each kind of item."""
    server = serve(api_keys_enabled=True, max_upload_bytes=512 * 1024, max_dataset_bytes=2 * 1024 * 1024)
    with db_session() as session:
        key = create_api_key(session, "fuzzer", ["admin"])
        store = LocalArtifactStore(server.settings.artifact_dir)
        register_version(session, store, "fuzz-model", artifact_dirs[0], shared=True)
        promote(session, "fuzz-model", 1)
    headers, client = {"X-API-Key": key}, server.client
    files = {role: (p.name, p.read_bytes()) for role, p in image_pair.items()}
    registration = client.post("/v1/registrations", files=files, data={"model": "fuzz-model"}, headers=headers)
    assert registration.status_code == 202, registration.text
    with db_session() as session:  # finished, as a worker leaves it: its downloads exist
        job = session.get(Job, registration.json()["id"])
        report = store.put_bytes(b'{"dice": {"1": 0.5}}')
        job.status, job.finished_at = JobStatus.SUCCEEDED, utcnow()
        job.result = {"outputs": {"report": {"file": "report.json", "sha256": report, "size_bytes": 20}},
                      "report": {"dice": {"1": 0.5}}, "model": {"ref": "fuzz-model:1"}}
    dataset = client.post("/v1/datasets", files={"file": ("study.zip", dataset_zip)}, headers=headers)
    assert dataset.status_code == 201, dataset.text
    training = client.post("/v1/training-jobs", headers=headers, json={
        "dataset_id": dataset.json()["id"], "model_name": "fuzz-trained", "hyperparameters": {"epochs": 1}})
    assert training.status_code == 202, training.text
    ids = {"registration": registration.json()["id"], "dataset": dataset.json()["id"],
           "training": training.json()["id"]}
    return server, key, ids


def _config(path: Path, ids: dict[str, str]) -> Path:
    """Real ids for the path parameters, per operation family; Schemathesis still varies the rest."""
    path.write_text(f"""
[generation]
max-examples = {MAX_EXAMPLES}

[[operations]]
include-path-regex = "^/v1/registrations/"
parameters = {{ job_id = "{ids['registration']}" }}

[[operations]]
include-path-regex = "^/v1/training-jobs/"
parameters = {{ job_id = "{ids['training']}" }}

[[operations]]
include-path-regex = "^/v1/datasets/"
parameters = {{ dataset_id = "{ids['dataset']}" }}

[[operations]]
include-path-regex = "^/v1/models/"
parameters = {{ name = "fuzz-model", version = 1 }}

# No worker runs beside this server, so /readyz answers its documented 503 (the workers check):
# by design, not a server error. Its status, schema and headers are still checked.
[[operations]]
include-path-regex = "^/readyz$"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
""", encoding="utf-8")
    return path


def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzzed, tmp_path):
    server, key, ids = fuzzed
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    command = [st, "--config-file", str(_config(tmp_path / "schemathesis.toml", ids)), "run",
               f"{server.url}/openapi.json", "--header", f"X-API-Key: {key}", "--seed", str(SEED),
               "--checks", CHECKS, "--workers", "1", "--max-failures", "20", "--request-timeout", "60",
               "--suppress-health-check", "all", "--report", "junit", "--report-dir", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "passed" in output and "Test cases:" in output  # it ran; not an empty selection
