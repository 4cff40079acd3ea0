"""Datasets over real HTTP: upload a zip in a supported layout, list, read, delete; bad uploads refused whole."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.db import Dataset


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _count(db_session) -> int:
    with db_session() as session:
        return session.scalar(select(func.count(Dataset.id)))


def _leftovers(server) -> list[Path]:
    return list((server.settings.artifact_dir / "datasets").iterdir())


@pytest.fixture(scope="module")
def server(serve):
    return serve(max_dataset_bytes=4 * 1024 * 1024)


def test_upload_list_read_delete(server, dataset_zip: bytes) -> None:
    response = server.client.post("/v1/datasets", data={"name": "phantoms"},
                                  files={"file": ("study.zip", dataset_zip, "application/zip")})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["layout"] == "manifest" and body["status"] == "ready" and body["name"] == "phantoms"
    assert body["n_pairs"] == 8 and body["n_subjects"] == 4 and body["n_labelled"] == 8 and body["ndim"] == 2
    assert body["shapes"] == [[32, 32]] and body["size_bytes"] == len(dataset_zip) and len(body["sha256"]) == 64
    assert server.client.get(body["url"]).json() == body
    listed = server.client.get("/v1/datasets").json()
    assert body["id"] in [d["id"] for d in listed["data"]] and listed["count"] >= 1
    folder = server.settings.artifact_dir / "datasets" / body["id"]
    assert (folder / "files" / "study" / "manifest.csv").is_file() and not (folder / "upload.zip").exists()

    assert server.client.delete(body["url"]).status_code == 204
    assert server.client.get(body["url"]).status_code == 404 and not folder.exists()


def test_layout_can_be_named_and_must_match(server, dataset_zip: bytes) -> None:
    response = server.client.post("/v1/datasets", data={"layout": "acdc"}, files={"file": ("d.zip", dataset_zip)})
    assert response.status_code == 422 and response.json()["code"] == "invalid_dataset"
    assert "patientNNN" in response.json()["detail"]
    response = server.client.post("/v1/datasets", data={"layout": "nifti-folder"}, files={"file": ("d.zip", b"x")})
    assert response.status_code == 422 and response.json()["code"] == "invalid_layout"


@pytest.mark.parametrize(("payload", "status", "code", "words"), [
    (b"not a zip at all", 415, "not_a_zip", "not a zip"),
    (_zip({"readme.txt": b"hello"}), 422, "invalid_dataset", "no dataset layout"),
    (_zip({"m/manifest.csv": b"fixed,moving\nmissing_f.nii.gz,missing_m.nii.gz\n"}), 422, "invalid_dataset",
     "missing_f.nii.gz"),
    (_zip({"../evil/manifest.csv": b"fixed,moving\n"}), 400, None, ".."),
])
def test_bad_uploads_leave_nothing(server, db_session, payload: bytes, status: int, code: str | None,
                                   words: str) -> None:
    before = _count(db_session)
    response = server.client.post("/v1/datasets", files={"file": ("bad.zip", payload)})
    assert response.status_code == status, response.text
    if code:
        assert response.json()["code"] == code
    assert words in response.json()["detail"]
    assert _count(db_session) == before and _leftovers(server) == []


def test_oversized_upload_is_413(server) -> None:
    response = server.client.post("/v1/datasets", files={"file": ("big.zip", b"0" * (5 * 1024 * 1024))})
    assert response.status_code == 413 and "ADACS_MAX_DATASET_BYTES" in response.json()["detail"]
    assert _leftovers(server) == []


def test_unknown_dataset_is_404(server) -> None:
    response = server.client.get("/v1/datasets/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
