"""Datasets over real HTTP: upload a zip in a supported layout, list, read, delete; bad uploads refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from models.io.archive import zip_bytes
from service.db import Dataset


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
    (zip_bytes(members={"readme.txt": b"hello"}), 422, "invalid_dataset", "no dataset layout"),
    (zip_bytes(members={"m/manifest.csv": b"fixed,moving\nmissing_f.nii.gz,missing_m.nii.gz\n"}), 422,
     "invalid_dataset", "missing_f.nii.gz"),
    (zip_bytes(members={"../evil/manifest.csv": b"fixed,moving\n"}), 400, None, ".."),
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


def test_an_unknown_form_field_is_refused_before_anything_is_kept(server, db_session, dataset_zip) -> None:
    """``layuot`` used to be dropped silently and the layout guessed; now it is named, with what the route takes."""
    before = _count(db_session)
    response = server.client.post("/v1/datasets", data={"layuot": "acdc"}, files={"file": ("d.zip", dataset_zip)})
    assert response.status_code == 422 and response.json()["code"] == "unknown_form_field"
    assert "'layuot'" in response.json()["detail"] and "file, name, layout" in response.json()["detail"]
    assert _count(db_session) == before and _leftovers(server) == []


def test_oversized_upload_is_413(server) -> None:
    response = server.client.post("/v1/datasets", files={"file": ("big.zip", b"0" * (5 * 1024 * 1024))})
    assert response.status_code == 413 and "ADACS_MAX_DATASET_BYTES" in response.json()["detail"]
    assert _leftovers(server) == []


def test_unknown_dataset_is_404(server) -> None:
    response = server.client.get("/v1/datasets/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


# -- manifests stay inside their archive, and refusals never quote a file ---------------------------

SECRET = "root:$6$TOPSECRET-hash-of-the-server:19000:0:99999:7:::"


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """Files the server can read but no upload holds: a valid image pair and a secret text file."""
    import numpy as np
    import SimpleITK as sitk

    folder = tmp_path_factory.mktemp("outside")
    rng = np.random.default_rng(5)
    for name in ("fixed", "moving"):
        sitk.WriteImage(sitk.GetImageFromArray(rng.random((16, 16)).astype(np.float32)), str(folder / f"{name}.nii.gz"))
    (folder / "shadow").write_text(SECRET + "\n", encoding="utf-8")
    return folder


def _climb(server, target: Path) -> str:
    """``target`` as a ``..`` path from where an uploaded manifest lands (``datasets/<id>/files/``)."""
    import os

    return os.path.relpath(target, server.settings.artifact_dir / "datasets" / "some-id" / "files")


@pytest.mark.parametrize("cells", [
    lambda server, out: (out / "shadow", out / "moving.nii.gz"),  # absolute, at a secret
    lambda server, out: (out / "fixed.nii.gz", out / "moving.nii.gz"),  # absolute, at images: would be "ready"
    lambda server, out: (_climb(server, out / "fixed.nii.gz"), _climb(server, out / "moving.nii.gz")),
    lambda server, out: (_climb(server, out / "shadow"), "~/moving.nii.gz"),
], ids=["absolute_secret", "absolute_images", "dotdot_images", "dotdot_secret_and_home"])
def test_a_manifest_pointing_outside_its_archive_is_refused(server, db_session, outside, cells) -> None:
    fixed, moving = cells(server, outside)
    before = _count(db_session)
    payload = zip_bytes(members={"manifest.csv": f"fixed,moving\n{fixed},{moving}\n".encode()})
    response = server.client.post("/v1/datasets", files={"file": ("escape.zip", payload)})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_dataset"
    assert "manifest.csv row 2: fixed: the path must be relative" in body["detail"]
    assert "TOPSECRET" not in response.text and str(outside) not in response.text
    assert str(server.settings.artifact_dir) not in response.text
    assert _count(db_session) == before and _leftovers(server) == []


def test_a_text_file_in_the_archive_is_refused_without_quoting_it(server, db_session, outside) -> None:
    before = _count(db_session)
    payload = zip_bytes(members={"manifest.csv": b"fixed,moving\nnotes.nii.gz,moving.nii.gz\n",
                                 "notes.nii.gz": SECRET.encode(),
                                 "moving.nii.gz": (outside / "moving.nii.gz").read_bytes()})
    response = server.client.post("/v1/datasets", files={"file": ("notes.zip", payload)})
    assert response.status_code == 422, response.text
    assert "manifest.csv row 2: fixed notes.nii.gz: is a text file, not an image" in response.json()["detail"]
    assert "TOPSECRET" not in response.text and "root:" not in response.text
    assert _count(db_session) == before and _leftovers(server) == []
