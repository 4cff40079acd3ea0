"""service/api/auth.py: API keys, off by default; when on, 401 names a missing, unknown or revoked key, 403 a scope.

Owners and the body-before-auth guarantees are in tests/api/test_security.py.
"""

import pytest

from service.cli_keys import create_api_key, list_api_keys, revoke_api_key


@pytest.fixture(scope="module")
def keys(db_session):
    with db_session() as session:
        keys = {scopes: create_api_key(session, f"key-{scopes}", scopes.split("+"))
                for scopes in ("register", "train", "register+train", "admin")}
        revoked = create_api_key(session, "old", ["train"])
        revoke_api_key(session, next(k.id for k in list_api_keys(session) if k.name == "old"))
    return keys | {"revoked": revoked}


@pytest.fixture(scope="module")
def keyed(serve):
    return serve(api_keys_enabled=True).client


def promote(client, **headers):
    return client.post("/v1/models/nonexistent/versions/1/promote", json={"stage": "staging"}, headers=headers)


def test_keys_off_everything_is_open(api):
    assert api.client.get("/v1/models").status_code == 200
    response = promote(api.client)  # past authentication, into the registry
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_keys_on_a_request_without_a_key_gets_401(keyed):
    response = keyed.get("/v1/models")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"code": "missing_api_key", "detail": "this server requires an API key: send it "
                                                                    "as 'X-API-Key: <key>' or 'Authorization: "
                                                                    "Bearer <key>'"}
    assert promote(keyed).status_code == 401


def test_keys_on_an_unknown_key_gets_401(keyed):
    for headers in ({"X-API-Key": "adacs_not-a-key"}, {"Authorization": "Bearer adacs_not-a-key"}):
        response = keyed.get("/v1/models", headers=headers)
        assert response.status_code == 401 and response.json()["code"] == "unknown_api_key"
        assert response.json()["detail"].startswith("unknown API key")


def test_keys_on_a_revoked_key_gets_401(keyed, keys):
    response = keyed.get("/v1/models", headers={"X-API-Key": keys["revoked"]})
    assert response.status_code == 401 and response.json()["code"] == "revoked_api_key"
    assert response.json()["detail"].startswith("API key 'old' was revoked at ")


def test_keys_on_a_key_without_the_scope_gets_403(keyed, keys):
    response = promote(keyed, **{"X-API-Key": keys["register"]})
    assert response.status_code == 403
    assert response.json() == {"code": "missing_scope", "detail": "API key 'key-register' lacks the scope 'admin' "
                                                                  "(it has ['register']); use a key created with "
                                                                  "scope 'admin'"}
    assert promote(keyed, **{"X-API-Key": keys["register+train"]}).status_code == 403  # the registry needs admin


def test_keys_on_a_key_with_the_scope_gets_through(keyed, keys, artifact_dirs, zip_folder):
    for key in (keys["register"], keys["train"]):  # reading needs a valid key, of any scope
        assert keyed.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
    upload = {"file": ("model.zip", zip_folder(artifact_dirs[0]), "application/zip")}
    response = keyed.post("/v1/models", data={"name": "keyed"}, files=upload, headers={"X-API-Key": keys["train"]})
    assert response.status_code == 403  # changing the registry is the admin's
    response = keyed.post("/v1/models", data={"name": "keyed"}, files=upload, headers={"X-API-Key": keys["admin"]})
    assert response.status_code == 201, response.text
    response = promote(keyed, Authorization=f"Bearer {keys['admin']}")
    assert response.status_code == 404 and "no model named 'nonexistent'" in response.json()["detail"]
    response = keyed.post("/v1/models/keyed/versions/1/promote", json={"stage": "production"},
                          headers={"Authorization": f"Bearer {keys['admin']}"})
    assert response.status_code == 200 and response.json()["version"] == 1


def test_probes_need_no_key(keyed):
    # /readyz answers 503 here (no worker runs beside this server), but to a stranger too.
    assert [keyed.get(path).status_code for path in ("/healthz", "/readyz", "/metrics")] == [200, 503, 200]


@pytest.mark.parametrize(("method", "path", "kwargs"), [
    ("post", "/v1/datasets", {"files": {"file": ("d.zip", b"PK\x05\x06" + bytes(18))}}),
    ("delete", "/v1/datasets/00000000-0000-0000-0000-000000000000", {}),
    ("post", "/v1/training-jobs", {"json": {"dataset_id": "00000000-0000-0000-0000-000000000000",
                                            "model_name": "m"}}),
    ("post", "/v1/training-jobs/00000000-0000-0000-0000-000000000000/cancel", {}),
])
def test_datasets_and_trainings_need_the_train_scope(keyed, keys, method, path, kwargs):
    assert getattr(keyed, method)(path, **kwargs).status_code == 401
    response = getattr(keyed, method)(path, headers={"X-API-Key": keys["register"]}, **kwargs)
    assert response.status_code == 403 and response.json()["code"] == "missing_scope"
    for key in (keys["train"], keys["admin"]):  # admin may do everything
        response = getattr(keyed, method)(path, headers={"X-API-Key": key}, **kwargs)
        assert response.status_code not in (401, 403), response.text  # past authentication, into the route
    assert keyed.get("/v1/training-jobs", headers={"X-API-Key": keys["register"]}).status_code == 200
