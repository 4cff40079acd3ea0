"""Bad uploads to POST /v1/models: each gets a 4xx naming the problem, and nothing is left behind."""

import zipfile

import pytest
from safetensors.numpy import load_file, save_file

from models.io.archive import zip_bytes
from service.api.limits import upload_limit
from service.core.config import Settings


@pytest.fixture
def store_untouched(api):
    """The store's objects and scratch folders before == after, and no model row was made."""
    root = api.settings.artifact_dir

    def snapshot():
        return sorted(p.relative_to(root) for sub in ("objects", "jobs", "tmp") for p in (root / sub).rglob("*"))

    before = snapshot()
    yield
    assert snapshot() == before
    assert api.client.get("/v1/models").json()["count"] == 0


def upload(api, data: bytes, filename: str = "model.zip", name: str = "cardiac"):
    return api.client.post("/v1/models", data={"name": name}, files={"file": (filename, data, "application/zip")})


def test_an_extra_scorer_file_is_422_naming_it(api, store_untouched, artifact_dirs, zip_folder):
    response = upload(api, zip_folder(artifact_dirs[0], members={"scorer.safetensors": b"weights"}))
    assert response.status_code == 422 and response.json()["code"] == "invalid_artifact"
    assert "holds ['scorer.safetensors'] besides the artifact" in response.json()["detail"]


def test_a_scoring_network_tensor_is_422_naming_it(api, store_untouched, artifact_dirs, tmp_path):
    tensors = load_file(artifact_dirs[0] / "model.safetensors")
    tensors["scorer.head.weight"] = tensors.pop(sorted(tensors)[0])  # same count: the name alone must be caught
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "1", "arch": "voxelmorph"})
    files = {name: (artifact_dirs[0] / name).read_bytes() for name in ("config.json", "card.json")}
    weights = {"model.safetensors": (tmp_path / "model.safetensors").read_bytes()}
    response = upload(api, zip_bytes(members=files | weights))
    assert response.status_code == 422
    assert "model.safetensors holds scoring-network tensors (scorer.head.weight)" in response.json()["detail"]


@pytest.mark.parametrize(("members", "problem"), [
    ({"../config.json": b"{}"}, "member '../config.json' climbs out of the archive folder"),
    ({"/etc/card.json": b"{}"}, "member '/etc/card.json' has an absolute path"),
])
def test_a_traversal_zip_is_400(api, store_untouched, members, problem):
    response = upload(api, zip_bytes(members=members), filename="evil.zip")
    assert response.status_code == 400 and response.json()["code"] == "hostile_archive"
    assert response.json()["detail"].startswith(f"evil.zip: {problem}")


def test_a_zip_bomb_is_400(api, store_untouched):
    # 16 MiB of zeros in ~50 bytes
    bomb = zip_bytes(members={"model.safetensors": bytes(16 * 1024 * 1024)}, compression=zipfile.ZIP_BZIP2)
    assert len(bomb) < 1024
    response = upload(api, bomb)
    assert response.status_code == 400 and "typical of a zip bomb" in response.json()["detail"]


def test_not_a_zip_is_400(api, store_untouched):
    response = upload(api, b"config.json model.safetensors card.json", filename="model.tar")
    assert response.status_code == 400 and "model.tar: not a valid zip archive" in response.json()["detail"]


def test_an_invalid_model_name_is_422(api, store_untouched, artifact_dirs, zip_folder):
    response = upload(api, zip_folder(artifact_dirs[0]), name="../cardiac")
    assert response.status_code == 422 and "invalid model name '../cardiac'" in response.json()["detail"]


def test_an_oversize_upload_is_413_before_it_is_read(api, store_untouched):
    limit = api.settings.max_upload_bytes
    response = upload(api, bytes(limit + 1))  # Content-Length says it all
    assert response.status_code == 413 and response.json() == {
        "code": "body_too_large",
        "detail": f"the request body is larger than the limit of {limit} bytes (ADACS_MAX_UPLOAD_BYTES)"}

    def chunks():  # a well-formed multipart body without Content-Length: counted while it streams in
        yield (b'--b\r\nContent-Disposition: form-data; name="file"; filename="model.zip"\r\n'
               b"Content-Type: application/zip\r\n\r\n")
        for _ in range(4):
            yield bytes(limit // 2)

    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    response = api.client.post("/v1/models", content=chunks(), headers=headers)
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"
    assert api.client.get("/healthz").status_code == 200  # and the server is still up


def test_datasets_get_their_own_larger_limit():
    settings = Settings(max_upload_bytes=10, max_dataset_bytes=1000)
    assert upload_limit(settings, "/v1/models") == (10, "max_upload_bytes")
    assert upload_limit(settings, "/v1/datasets") == (1000, "max_dataset_bytes")
