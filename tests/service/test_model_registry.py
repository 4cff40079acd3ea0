"""service/registry: versions, stage labels, references and deletion, on SQLite and PostgreSQL."""

import shutil

import pytest

from service.db import Job, JobKind, ModelVersion
from service.registry import (
    Conflict,
    InvalidReference,
    ModelRef,
    NotFound,
    delete_model,
    delete_version,
    demote,
    get_model,
    get_version,
    list_models,
    list_versions,
    parse_ref,
    promote,
    register_version,
    resolve,
    stages_of,
)


def test_versions_count_up_per_model(session, store, make_artifact):
    v1 = register_version(session, store, "cardiac", make_artifact(seed=1))
    v2 = register_version(session, store, "cardiac", make_artifact(seed=2))
    other = register_version(session, store, "lung", make_artifact(seed=3))
    session.commit()
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    assert v1.sha256 != v2.sha256 and v2.ref == "cardiac:2"
    assert store.exists(v1.sha256) and v1.storage_key == store.key_of(v1.sha256)
    assert v1.card == {"method": "adacs", "seed": 1}
    assert [m.name for m in list_models(session)] == ["cardiac", "lung"]
    assert [v.version for v in list_versions(session, "cardiac")] == [1, 2]
    assert get_version(session, "cardiac", 2).sha256 == v2.sha256


def test_registering_the_same_content_again_returns_the_existing_version(session, store, make_artifact, tmp_path):
    artifact = make_artifact(seed=1)
    first = register_version(session, store, "cardiac", artifact)
    session.commit()
    copy = shutil.copytree(artifact, tmp_path / "copy")  # same bytes elsewhere, e.g. a redelivered training
    again = register_version(session, store, "cardiac", copy)
    assert again.id == first.id and [v.version for v in list_versions(session, "cardiac")] == [1]
    assert register_version(session, store, "copy", copy).sha256 == first.sha256


def test_source_job_is_recorded(session, store, make_artifact):
    job = Job(kind=JobKind.TRAINING)
    session.add(job)
    session.flush()
    version = register_version(session, store, "cardiac", make_artifact(), source_job_id=job.id)
    session.commit()
    assert session.get(ModelVersion, version.id).source_job_id == job.id
    with pytest.raises(NotFound, match="no job 'gone': source_job_id must name the training job"):
        register_version(session, store, "cardiac", make_artifact(seed=5), source_job_id="gone")


def test_resolve_follows_the_production_label(session, store, make_artifact):
    for seed in (1, 2, 3):
        register_version(session, store, "cardiac", make_artifact(seed=seed))
    with pytest.raises(NotFound, match=r"'cardiac' has no version labelled 'production': promote one of its "
                                       r"versions \[1, 2, 3\]"):
        resolve(session, "cardiac")
    promote(session, "cardiac", 2, "production")
    promote(session, "cardiac", 3, "staging")
    session.commit()
    assert resolve(session, "cardiac").version == 2
    assert resolve(session, "cardiac:1").version == 1
    assert resolve(session, "cardiac@staging").version == 3
    assert resolve(session, "cardiac:latest").version == 3
    assert resolve(session, ModelRef("cardiac", version=3)).version == 3
    promote(session, "cardiac", 3, "production")  # labels move
    session.commit()
    assert resolve(session, "cardiac").version == 3
    assert stages_of(session, get_version(session, "cardiac", 3)) == ["production", "staging"]
    assert stages_of(session, get_version(session, "cardiac", 2)) == []


def test_not_found_messages_say_what_exists(session, store, make_artifact):
    with pytest.raises(NotFound, match="no model named 'cardiac'; the registry is empty"):
        resolve(session, "cardiac")
    register_version(session, store, "cardiac", make_artifact())
    with pytest.raises(NotFound, match="no model named 'heart'; registered models: cardiac"):
        get_model(session, "heart")
    with pytest.raises(NotFound, match=r"'cardiac' has no version 7; its versions are \[1\]"):
        resolve(session, "cardiac:7")
    with pytest.raises(NotFound, match="no version labelled 'staging'"):
        resolve(session, "cardiac@staging")
    with pytest.raises(NotFound, match=r"'cardiac' has no version 2"):
        promote(session, "cardiac", 2, "production")
    with pytest.raises(NotFound, match="has no 'staging' label"):
        demote(session, "cardiac", "staging")
    assert NotFound.http_status == 404 and Conflict.http_status == 409


def test_demote_removes_a_label(session, store, make_artifact):
    register_version(session, store, "cardiac", make_artifact())
    promote(session, "cardiac", 1, "production")
    session.commit()
    assert demote(session, "cardiac", "production") == 1
    session.commit()
    with pytest.raises(NotFound, match="no version labelled 'production'"):
        resolve(session, "cardiac")


@pytest.mark.parametrize("text, message", [
    ("a:b", "after ':' comes a version number"), ("a:0", "version number"), ("a@Prod", "invalid stage"),
    ("a/b", "invalid model name"), ("", "invalid model name"), ("a@latest", "invalid stage"),
])
def test_bad_references(text, message):
    with pytest.raises(InvalidReference, match=message):
        parse_ref(text)


def test_parse_ref():
    assert parse_ref("m") == ModelRef("m", stage="production")
    assert parse_ref("m.v2_x-y:12") == ModelRef("m.v2_x-y", version=12)
    assert str(parse_ref("m@staging")) == "m@staging" and str(parse_ref("m:latest")) == "m:latest"


def test_a_labelled_version_is_deleted_only_by_force(session, store, make_artifact):
    register_version(session, store, "cardiac", make_artifact(seed=1))
    kept = register_version(session, store, "cardiac", make_artifact(seed=2))
    promote(session, "cardiac", 2, "production")
    session.commit()
    with pytest.raises(Conflict, match=r"version 2 of model 'cardiac' is labelled \['production'\]: move the label"):
        delete_version(session, store, "cardiac", 2)
    session.rollback()
    delete_version(session, store, "cardiac", 2, force=True)
    session.commit()
    assert [v.version for v in list_versions(session, "cardiac")] == [1]
    assert not store.exists(kept.sha256)
    with pytest.raises(NotFound, match="no version labelled 'production'"):
        resolve(session, "cardiac")
    assert register_version(session, store, "cardiac", make_artifact(seed=3)).version == 2  # max + 1


def test_delete_keeps_objects_other_versions_use(session, store, make_artifact):
    artifact = make_artifact(seed=1)
    shared = register_version(session, store, "a", artifact)
    register_version(session, store, "b", artifact)  # the same bytes under another name
    session.commit()
    files = {sha for sha, _ in store.read_manifest(shared.sha256).values()}
    gone = delete_version(session, store, "a", 1)
    session.commit()
    assert gone == set() and store.exists(shared.sha256) and all(store.exists(s) for s in files)
    other = register_version(session, store, "b", make_artifact(seed=2))  # shares config.json with b:1
    session.commit()
    weights = store.read_manifest(other.sha256)["model.safetensors"][0]
    gone = delete_version(session, store, "b", 2)
    session.commit()
    assert weights in gone and store.read_manifest(shared.sha256)["config.json"][0] not in gone
    assert not store.exists(other.sha256) and all(store.exists(s) for s in files)


def test_a_rolled_back_delete_keeps_every_object(session, store, make_artifact):
    version = register_version(session, store, "cardiac", make_artifact())
    session.commit()
    assert delete_version(session, store, "cardiac", 1)
    session.rollback()
    session.commit()  # a later commit must not delete what the rolled back transaction meant to
    assert store.exists(version.sha256) and get_version(session, "cardiac", 1).id == version.id


def test_delete_model(session, store, make_artifact):
    for seed in (1, 2):
        register_version(session, store, "cardiac", make_artifact(seed=seed))
    promote(session, "cardiac", 1, "production")
    session.commit()
    with pytest.raises(Conflict, match="is labelled"):
        delete_model(session, store, "cardiac")
    session.rollback()
    assert len(delete_model(session, store, "cardiac", force=True)) >= 5  # 2 manifests, 2 weights, 2 cards, ...
    session.commit()
    assert list_models(session) == [] and not any(p.is_file() for p in (store.root / "objects").rglob("*"))
