"""service/api/routes/models.py: the registry over HTTP, from upload to download to delete."""

import io
import zipfile

import pytest


@pytest.fixture(scope="module")
def registered(api, artifact_dirs, zip_folder):
    """Model 'cardiac' with versions 1 and 2 (the second zipped inside a folder), uploaded over HTTP."""
    responses = [api.client.post("/v1/models", data={"name": "cardiac"},
                                 files={"file": (f"m{i}.zip", zip_folder(d, prefix="model/" if i else ""))})
                 for i, d in enumerate(artifact_dirs)]
    return responses


def test_upload_answers_201_with_the_version_and_its_card(registered, api):
    first, second = registered
    assert first.status_code == 201, first.text
    assert first.headers["Location"] == f"{api.url}/v1/models/cardiac/versions/1"
    body = first.json()
    assert body["ref"] == "cardiac:1" and body["stages"] == [] and len(body["sha256"]) == 64
    assert body["card"] == {"method": "adacs", "seed": 0, "data": "synthetic phantoms"}
    assert second.status_code == 201 and second.json()["version"] == 2 and second.json()["card"]["seed"] == 1


def test_uploading_the_same_content_again_returns_the_existing_version(registered, api, artifact_dirs, zip_folder):
    again = api.client.post("/v1/models", data={"name": "cardiac"},
                            files={"file": ("again.zip", zip_folder(artifact_dirs[0]))})
    assert again.status_code == 200 and again.json()["version"] == 1
    assert again.json()["sha256"] == registered[0].json()["sha256"]


def test_list_and_get_show_versions_stages_and_cards(registered, api):
    listing = api.client.get("/v1/models").json()
    assert listing["count"] == 1 and [m["name"] for m in listing["data"]] == ["cardiac"]
    model = listing["data"][0]
    assert model["latest_version"] == 2 and [v["version"] for v in model["versions"]] == [1, 2]
    assert "card" not in model["versions"][0]  # the list stays light; the model's own page has the cards

    detail = api.client.get("/v1/models/cardiac").json()
    assert [v["card"]["seed"] for v in detail["versions"]] == [0, 1]
    version = api.client.get("/v1/models/cardiac/versions/2").json()
    assert version["ref"] == "cardiac:2" and version["card"]["data"] == "synthetic phantoms"


def test_unknown_models_and_versions_are_404_naming_what_exists(registered, api):
    response = api.client.get("/v1/models/heart")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "no model named 'heart'; registered models: cardiac"}
    response = api.client.get("/v1/models/cardiac/versions/7")
    assert response.status_code == 404 and "its versions are [1, 2]" in response.json()["detail"]
    response = api.client.get("/v1/models/bad%20name")
    assert response.status_code == 422 and response.json()["code"] == "invalid_reference"


def test_promote_moves_the_label_and_listing_shows_it(registered, api):
    response = api.client.post("/v1/models/cardiac/versions/1/promote", json={"stage": "production"})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "cardiac" and response.json()["stage"] == "production"
    assert api.client.post("/v1/models/cardiac/versions/2/promote", json={}).json()["version"] == 2  # default stage
    api.client.post("/v1/models/cardiac/versions/1/promote", json={"stage": "staging"})

    model = api.client.get("/v1/models").json()["data"][0]
    assert model["stages"] == {"production": 2, "staging": 1}
    assert [v["stages"] for v in model["versions"]] == [["staging"], ["production"]]
    response = api.client.post("/v1/models/cardiac/versions/1/promote", json={"stage": "Latest!"})
    assert response.status_code == 422 and "invalid stage 'Latest!'" in response.json()["detail"]


def test_download_gives_the_three_files_byte_for_byte(registered, api, artifact_dirs):
    response = api.client.get("/v1/models/cardiac/versions/2/artifact")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == 'attachment; filename="cardiac-2.zip"'
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        files = {name: archive.read(name) for name in archive.namelist()}
    assert set(files) == {"config.json", "model.safetensors", "card.json"}
    assert all(files[name] == (artifact_dirs[1] / name).read_bytes() for name in files)
    assert api.client.get("/v1/models/cardiac/versions/2/artifact").content == response.content  # reproducible


def test_delete_is_refused_while_labelled_unless_forced(registered, api):
    response = api.client.delete("/v1/models/cardiac/versions/2")
    assert response.status_code == 409 and response.json()["code"] == "conflict"
    assert "labelled ['production']" in response.json()["detail"]

    assert api.client.delete("/v1/models/cardiac/stages/staging").status_code == 204
    assert api.client.delete("/v1/models/cardiac/versions/1").status_code == 204  # no label left on it
    assert api.client.delete("/v1/models/cardiac/versions/2", params={"force": "true"}).status_code == 204
    model = api.client.get("/v1/models/cardiac").json()
    assert model["versions"] == [] and model["stages"] == {}
    assert api.client.get("/v1/models/cardiac/versions/2/artifact").status_code == 404
    # Both versions gone: their objects left the store once the deletes committed.
    assert not any(p.is_file() for p in (api.settings.artifact_dir / "objects").rglob("*"))
