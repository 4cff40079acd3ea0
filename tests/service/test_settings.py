"""service/core/config.py and service/core/security.py: settings from the environment, API key helpers."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.core.config import Settings, get_settings
from service.core.security import check_scopes, hash_api_key, new_api_key


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("DATA_DIR", "DATABASE_URL", "ARTIFACT_DIR", "BROKER_URL", "API_KEYS_ENABLED", "MAX_UPLOAD_BYTES"):
        monkeypatch.delenv(f"ADACS_{name}", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults_live_under_data_dir(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.data_dir == tmp_path / "adacs-data"
    assert settings.database_url == f"sqlite:///{tmp_path / 'adacs-data' / 'adacs.db'}"
    assert settings.artifact_dir == tmp_path / "adacs-data" / "artifacts"
    assert settings.broker_url == "filesystem://"
    assert settings.result_backend is None
    assert settings.api_keys_enabled is False
    assert settings.max_upload_bytes == 512 * 1024 * 1024
    assert settings.visibility_timeout_s > settings.training_time_limit_s


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("ADACS_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ADACS_DATABASE_URL", "postgresql://u@db/adacs")
    monkeypatch.setenv("ADACS_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("ADACS_API_KEYS_ENABLED", "true")
    monkeypatch.setenv("ADACS_MAX_UPLOAD_BYTES", "1000")
    monkeypatch.setenv("ADACS_HEARTBEAT_STALE_S", "2.5")
    settings = get_settings()
    assert (settings.database_url, settings.broker_url) == ("postgresql://u@db/adacs", "redis://redis:6379/0")
    assert settings.api_keys_enabled is True and settings.max_upload_bytes == 1000
    assert settings.heartbeat_stale_s == 2.5
    assert settings.artifact_dir == tmp_path / "state" / "artifacts"
    assert settings.broker_transport_options() == {"visibility_timeout": 12 * 3600}


def test_get_settings_is_cached_until_cleared(monkeypatch):
    monkeypatch.setenv("ADACS_MAX_VOXELS", "10")
    first = get_settings()
    monkeypatch.setenv("ADACS_MAX_VOXELS", "20")
    assert get_settings() is first and first.max_voxels == 10
    get_settings.cache_clear()
    assert get_settings().max_voxels == 20


def test_bad_values_name_the_setting(monkeypatch):
    monkeypatch.setenv("ADACS_MAX_UPLOAD_BYTES", "lots")
    with pytest.raises(ValidationError, match="max_upload_bytes"):
        Settings()
    monkeypatch.delenv("ADACS_MAX_UPLOAD_BYTES")
    with pytest.raises(ValidationError, match="visibility_timeout_s .* must exceed training_time_limit_s"):
        Settings(visibility_timeout_s=60, training_time_limit_s=600)


def test_filesystem_broker_folders(tmp_path):
    settings = Settings(data_dir=tmp_path)
    settings.ensure_directories()
    options = settings.broker_transport_options()
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "broker" / "queue")
    assert Path(options["data_folder_in"]).is_dir() and settings.artifact_dir.is_dir()


def test_api_keys_store_only_a_hash():
    key = new_api_key()
    assert key.startswith("adacs_") and len(key) > 40 and new_api_key() != key
    assert hash_api_key(key) == hash_api_key(key) and len(hash_api_key(key)) == 64 and key not in hash_api_key(key)
    assert check_scopes(["train", "register", "train"]) == ["register", "train"]
    assert check_scopes(["admin"]) == ["admin"]
    with pytest.raises(ValueError, match=r"unknown scope\(s\) \['root'\]"):
        check_scopes(["root"])
