"""service/api/deps.py: one session per request, committed before the answer, rolled back on an error."""

import pytest

from service.api.deps import SessionDep, require_scope
from service.cli_keys import create_api_key, list_api_keys
from service.registry import Conflict


def add_probe_route(app):
    @app.post("/probe/{name}")
    def write_then_maybe_fail(name: str, session: SessionDep, fail: bool = False) -> dict:
        create_api_key(session, name, ["register"])
        if fail:
            raise Conflict(f"refused after writing {name!r}")
        return {"written": name}


@pytest.fixture(scope="module")
def probe(serve):
    return serve(extend=add_probe_route).client


def names(db_session):
    with db_session() as session:
        return {key.name for key in list_api_keys(session)}


def test_a_request_that_returns_has_committed_when_the_answer_arrives(probe, db_session):
    assert probe.post("/probe/kept").json() == {"written": "kept"}
    assert "kept" in names(db_session)  # read on another connection, right after the answer


def test_a_request_that_raises_leaves_no_write_behind(probe, db_session):
    response = probe.post("/probe/dropped", params={"fail": "true"})
    assert response.status_code == 409
    assert response.json() == {"detail": "refused after writing 'dropped'", "code": "conflict"}
    assert "dropped" not in names(db_session)


def test_require_scope_knows_the_scopes():
    with pytest.raises(ValueError, match=r"unknown scope 'root'; known scopes: \['admin', 'register', 'train'\]"):
        require_scope("root")
