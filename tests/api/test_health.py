"""service/api/routes/health.py: liveness, readiness that names the failing dependency, Prometheus metrics."""

import re

from sqlalchemy import text

from service.db import head_revision, make_engine


def test_healthz_answers_without_dependencies(serve):
    # A broker that cannot answer and a database that does not exist: liveness does not care.
    server = serve(broker_url="redis://127.0.0.1:1/0", database_url="postgresql://nobody@127.0.0.1:1/none")
    response = server.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "alive"}


def test_readyz_with_a_good_config_checks_every_dependency(api):
    # No worker runs beside this server: every dependency is fine, and the 503 says that only the
    # workers are missing (tests/api/test_readiness_workers.py starts real ones).
    response = api.client.get("/readyz")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["ready"] is False and set(body["checks"]) == {"database", "broker", "artifact_store", "workers"}
    assert [name for name, check in body["checks"].items() if not check["ok"]] == ["workers"]
    assert re.search(r"(sqlite|postgresql) answers; schema at revision \d+", body["checks"]["database"]["detail"])
    assert "broker folders writable" in body["checks"]["broker"]["detail"]


def test_readyz_pings_redis(serve):
    response = serve(broker_url="redis://127.0.0.1:6379/0").client.get("/readyz")
    checks = response.json()["checks"]
    assert [name for name, check in checks.items() if not check["ok"]] == ["workers"], response.text  # none runs
    assert checks["broker"]["detail"] == "PING to redis://127.0.0.1:6379/0 answered"


def test_readyz_names_a_broken_broker(serve):
    response = serve(broker_url="redis://:secret@127.0.0.1:1/0").client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] and checks["artifact_store"]["ok"] and not checks["broker"]["ok"]
    assert "ConnectionError" in checks["broker"]["detail"] and "127.0.0.1:1" in checks["broker"]["detail"]
    assert "secret" not in response.text


def test_readyz_names_a_missing_broker_folder_and_an_old_schema(serve, api_db_url, tmp_path):
    server = serve()
    (server.settings.broker_dir / "control").rmdir()
    checks = server.client.get("/readyz").json()["checks"]
    assert not checks["broker"]["ok"] and checks["broker"]["detail"].endswith("control does not exist")
    server.settings.ensure_directories()

    engine = make_engine(api_db_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    try:
        response = server.client.get("/readyz")
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE alembic_version SET version_num = '{head_revision()}'"))
        engine.dispose()
    assert response.status_code == 503
    assert (f"schema is at revision '0000' but this code needs '{head_revision()}'"
            in response.json()["checks"]["database"]["detail"])


def test_metrics_count_requests_per_route_template_and_status(api):
    api.client.get("/healthz")
    api.client.get("/v1/models/nonexistent")
    exposition = api.client.get("/metrics").text
    assert re.search(r'adacs_http_requests_total\{method="GET",route="/healthz",status="200"\} [1-9]', exposition)
    # Labelled by the route's template, not the raw path, so label values stay few.
    assert re.search(r'adacs_http_requests_total\{method="GET",route="/v1/models/\{name\}",status="404"\} [1-9]',
                     exposition)
    assert re.search(r'adacs_http_request_duration_seconds_count\{method="GET",route="/healthz"\} [1-9]', exposition)


def test_metrics_count_jobs_by_status_from_the_database(api, db_session):
    from service.db import Job, JobKind, JobStatus

    with db_session() as session:
        session.add_all([Job(kind=JobKind.REGISTRATION), Job(kind=JobKind.REGISTRATION),
                         Job(kind=JobKind.TRAINING, status=JobStatus.RUNNING)])
    exposition = api.client.get("/metrics").text
    assert 'adacs_jobs{kind="registration",status="queued"} 2.0' in exposition
    assert 'adacs_jobs{kind="training",status="running"} 1.0' in exposition
    assert 'adacs_jobs{kind="training",status="failed"} 0.0' in exposition
    assert "adacs_database_up 1.0" in exposition
    with db_session() as session:
        session.query(Job).delete()
