"""The deployment: docker-compose.yml, the two Dockerfiles, their entrypoint and the one list of
environment variables (docker/ENVIRONMENT.md).

Static checks, so no Docker engine is needed: the compose file is read with PyYAML, the
Dockerfiles instruction by instruction, the entrypoint with ``bash -n``. A missing file, service,
health check, volume or documented variable fails; nothing here skips.
"""

import json
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

from service.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
API_DOCKERFILE = ROOT / "docker" / "api.Dockerfile"
WORKER_DOCKERFILE = ROOT / "docker" / "worker.Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
ENVIRONMENT_MD = ROOT / "docker" / "ENVIRONMENT.md"

SERVICES = ("redis", "postgres", "api", "worker", "worker-cpu", "beat", "flower")
OUR_SERVICES = ("api", "worker", "worker-cpu")  # built from this repository's images
WORKERS = ("worker", "worker-cpu")
VOLUMES = ("artifacts", "postgres-data", "redis-data")
ARTIFACT_DIR = "/var/lib/adacs/artifacts"


def _read(path: Path) -> str:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return path.read_text(encoding="utf-8")  # not the locale's encoding: another test may have changed it


@cache
def compose() -> dict:
    data = yaml.safe_load(_read(COMPOSE))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), \
        "docker-compose.yml must be a mapping with a `services` mapping"
    return data


def service(name: str) -> dict:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r} (it has {sorted(services)})"
    return services[name]


def environment(name: str) -> dict[str, str | None]:
    """A service's environment as a mapping; ``None`` marks a variable passed through from the shell."""
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: None if value is None else str(value) for key, value in env.items()}


def as_words(command: str | list) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def mounts(name: str) -> dict[str, str]:
    """Named or bound sources of a service's volumes, by target path (short and long syntax)."""
    targets = {}
    for volume in service(name).get("volumes") or []:
        if isinstance(volume, dict):
            targets[volume["target"]] = volume.get("source", "")
        else:
            source, target = volume.split(":")[:2]
            targets[target] = source
    return targets


@cache
def table_rows() -> dict[str, list[str]]:
    """The cells after the name of each variable's table row in docker/ENVIRONMENT.md."""
    rows = {}
    for line in _read(ENVIRONMENT_MD).splitlines():
        match = re.match(r"\|\s*`([A-Z][A-Z0-9_]*)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    assert rows, "docker/ENVIRONMENT.md lists no variables"
    return rows


def documented() -> dict[str, str | None]:
    """Each documented variable with its default: the first `code` of the row's Default column."""
    defaults = {}
    for name, cells in table_rows().items():
        code = re.search(r"`([^`]*)`", cells[0])
        defaults[name] = code.group(1) if code else None
    return defaults


def interpolated(text: str) -> set[str]:
    """Names written ${NAME...} or $NAME, leaving out escaped $$ (the container's own variables)."""
    return set(re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for line in _read(path).splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    parsed = []
    for line in logical:
        word, _, rest = line.strip().partition(" ")
        parsed.append((word.upper(), rest.strip()))
    return parsed


def args_of(path: Path) -> dict[str, str]:
    """Default of each ARG (the first one declared wins)."""
    defaults = {}
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults.setdefault(name.strip(), value.strip().strip('"'))
    return defaults


def ci_torch_version() -> str:
    match = re.search(r"torch==([0-9][0-9A-Za-z.+]*)", _read(ROOT / ".ci" / "install"))
    assert match, ".ci/install pins no torch version"
    return match.group(1)


# --- docker-compose.yml -----------------------------------------------------------------------

def test_compose_holds_every_service():
    missing = [name for name in SERVICES if name not in compose()["services"]]
    assert missing == [], f"docker-compose.yml lacks services {missing}"


def test_only_the_cpu_worker_sits_in_a_profile():
    assert service("worker-cpu").get("profiles") == ["cpu"]
    in_profiles = [name for name in SERVICES if name != "worker-cpu" and service(name).get("profiles")]
    assert in_profiles == [], f"plain `docker compose up` must start {in_profiles}: give them no profile"


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_a_health_check(name):
    check = service(name).get("healthcheck")
    assert isinstance(check, dict), f"service {name!r} has no healthcheck"
    assert not check.get("disable"), f"service {name!r} disables its healthcheck"
    test = as_words(check.get("test") or [])
    assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name!r}: healthcheck test {test}"


def test_services_wait_for_healthy_dependencies():
    expected = {"api": {"redis", "postgres"}, "worker": {"redis", "postgres"},
                "worker-cpu": {"redis", "postgres"}, "beat": {"redis", "postgres"}, "flower": {"redis"}}
    for name, needs in expected.items():
        depends_on = service(name).get("depends_on")
        assert isinstance(depends_on, dict), f"{name!r}: depends_on must be a mapping with conditions"
        assert needs <= set(depends_on), f"{name!r} must wait for {sorted(needs - set(depends_on))}"
        for target, rule in depends_on.items():
            assert rule.get("condition") == "service_healthy", f"{name!r} -> {target!r}: {rule}"


def test_artifacts_volume_is_shared_at_one_path():
    volumes = compose().get("volumes") or {}
    assert set(VOLUMES) <= set(volumes), f"top-level volumes {sorted(volumes)} lack {set(VOLUMES) - set(volumes)}"
    for name in OUR_SERVICES:
        assert mounts(name).get(ARTIFACT_DIR) == "artifacts", f"{name!r} must mount `artifacts` at {ARTIFACT_DIR}"
        assert environment(name).get("ADACS_ARTIFACT_DIR") == ARTIFACT_DIR, f"{name!r}: ADACS_ARTIFACT_DIR"


def test_database_and_queues_keep_their_state_on_named_volumes():
    assert mounts("postgres").get("/var/lib/postgresql/data") == "postgres-data"
    assert mounts("redis").get("/data") == "redis-data"


def test_redis_never_evicts_and_persists():
    command = as_words(service("redis").get("command") or [])
    assert "--maxmemory-policy" in command, f"redis command {command} sets no eviction policy"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"


def test_postgres_health_check_is_pg_isready():
    assert "pg_isready" in " ".join(as_words(service("postgres")["healthcheck"]["test"]))


def test_gpu_worker_reserves_an_nvidia_gpu_and_cpu_worker_none():
    devices = (service("worker").get("deploy") or {}).get("resources", {}).get("reservations", {}).get("devices")
    assert devices, "the GPU worker has no deploy.resources.reservations.devices"
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert "deploy" not in service("worker-cpu"), "the CPU worker must not reserve a GPU"


def test_api_and_workers_share_settings_with_api_keys_on():
    settings = {name: {k: v for k, v in environment(name).items() if k.startswith("ADACS_")} for name in OUR_SERVICES}
    assert (settings["api"].get("ADACS_API_KEYS_ENABLED") or "").lower() == "true"
    for name in WORKERS:
        assert settings[name] == settings["api"], f"{name!r} and api must get the same ADACS_* settings"


def test_settings_point_at_the_compose_services():
    env = environment("api")
    assert (env.get("ADACS_BROKER_URL") or "").startswith("redis://redis:6379/")
    assert "@postgres:5432/" in (env.get("ADACS_DATABASE_URL") or "")
    assert environment("flower").get("CELERY_BROKER_URL") == env["ADACS_BROKER_URL"]


def test_processes_ports_and_queues():
    assert as_words(service("api")["command"]) == ["api"]
    assert any(str(port).endswith(":8000") for port in service("api").get("ports", []))
    assert "/readyz" in " ".join(as_words(service("api")["healthcheck"]["test"]))
    assert any(str(port).endswith(":5555") for port in service("flower").get("ports", []))
    for name in WORKERS:
        assert as_words(service(name)["command"]) == ["worker"]
        assert set((environment(name).get("WORKER_QUEUES") or "").split(",")) == {"inference", "training"}
        check = " ".join(as_words(service(name)["healthcheck"]["test"]))
        assert "inspect ping" in check and "celery@$$HOSTNAME" in check, check


def test_beat_runs_the_reaper_with_the_api_settings():
    assert as_words(service("beat")["command"]) == ["beat"]
    assert service("beat")["image"] == service("api")["image"]
    beat = {k: v for k, v in environment("beat").items() if k.startswith("ADACS_")}
    assert beat == {k: v for k, v in environment("api").items() if k.startswith("ADACS_")}
    entrypoint = _read(ROOT / "docker" / "entrypoint.sh")
    assert "beat)" in entrypoint and "celery --app worker.celery_app:app beat" in entrypoint
    assert "/tmp/celerybeat.pid" in " ".join(as_words(service("beat")["healthcheck"]["test"]))


def test_services_use_the_right_images():
    assert service("api")["build"]["dockerfile"] == "docker/api.Dockerfile"
    assert service("worker")["build"]["dockerfile"] == "docker/worker.Dockerfile"
    assert service("worker-cpu")["build"]["dockerfile"] == "docker/api.Dockerfile"
    assert service("worker-cpu")["image"] == service("api")["image"]
    assert service("flower")["image"].startswith("mher/flower:")


# --- docker/ENVIRONMENT.md: every setting documented -------------------------------------------

def test_every_variable_compose_uses_is_documented():
    used = interpolated(_read(COMPOSE))
    for name in OUR_SERVICES:
        used |= set(environment(name))
        build_args = service(name)["build"].get("args") or []
        used |= set(build_args) if isinstance(build_args, dict) else {arg.split("=")[0] for arg in build_args}
    assert used - set(documented()) == set(), "document these in docker/ENVIRONMENT.md"


def test_every_variable_the_images_read_is_documented():
    used = {name for name in interpolated(_read(ENTRYPOINT)) if name.isupper()}
    for dockerfile in (API_DOCKERFILE, WORKER_DOCKERFILE):
        for word, rest in instructions(dockerfile):
            if word == "ENV":
                used |= {name for name in re.findall(r"([A-Z][A-Z0-9_]*)=", rest) if name.startswith("ADACS_")}
    used |= {"CUDA_IMAGE", "TORCH_CUDA"}
    assert used - set(documented()) == set(), "document these in docker/ENVIRONMENT.md"


def test_every_application_setting_is_documented_with_its_default():
    from worker.settings import WorkerSettings

    fields = {f"ADACS_{name.upper()}": field for name, field in Settings.model_fields.items()}
    fields |= {f"ADACS_WORKER_{name.upper()}": field for name, field in WorkerSettings.model_fields.items()}
    docs = documented()
    assert set(fields) - set(docs) == set(), "settings missing from docker/ENVIRONMENT.md"
    stale = {name for name in docs if name.startswith("ADACS_")} - set(fields)
    assert stale == set(), "docker/ENVIRONMENT.md documents settings that service/core/config.py lacks"
    for name, field in fields.items():
        if field.default is not None:
            assert docs[name] is not None, f"{name}: no default in docker/ENVIRONMENT.md"
            assert TypeAdapter(field.annotation).validate_python(docs[name]) == field.default, \
                f"{name}: docker/ENVIRONMENT.md says {docs[name]!r}, the code says {field.default!r}"


def test_compose_passes_every_application_setting_it_does_not_rule_out():
    """A setting is either given to api and workers, or its "In compose" cell says why not."""
    env = environment("api")
    for name in (f"ADACS_{field.upper()}" for field in Settings.model_fields):
        in_compose = table_rows()[name][1]
        if in_compose in ("not set", "not used"):
            assert name not in env, f"{name} is documented as {in_compose!r} but compose sets it"
        else:
            assert name in env, f"{name}: pass it through in docker-compose.yml or document it as not used"


def test_documented_build_argument_defaults_match_the_dockerfile():
    args = args_of(WORKER_DOCKERFILE)
    for name in ("CUDA_IMAGE", "TORCH_CUDA"):
        assert documented()[name] == args.get(name), f"{name}: ENVIRONMENT.md and worker.Dockerfile differ"


# --- the Dockerfiles ---------------------------------------------------------------------------

def _run_lines(path: Path) -> list[str]:
    return [rest for word, rest in instructions(path) if word == "RUN"]


def _torch_then_project(path: Path, index: str) -> None:
    runs = " ".join(_run_lines(path))
    torch_at = runs.find('torch==${TORCH_VERSION}')
    assert torch_at >= 0, f"{path.name} does not pin torch==${{TORCH_VERSION}}"
    assert index in runs[torch_at:torch_at + 200], f"{path.name}: torch must come from {index}"
    project_at = runs.find("pip install /src")
    assert project_at > torch_at, f"{path.name}: install the project (pip install /src) after torch, as CI does"
    assert args_of(path).get("TORCH_VERSION") == ci_torch_version(), \
        f"{path.name}: TORCH_VERSION differs from the pin in .ci/install ({ci_torch_version()})"


def test_api_image_installs_the_cpu_torch_build_as_ci_does():
    froms = [rest for word, rest in instructions(API_DOCKERFILE) if word == "FROM"]
    assert args_of(API_DOCKERFILE).get("PYTHON_IMAGE", "").startswith("python:3.")
    assert froms and all(rest.startswith("${PYTHON_IMAGE}") for rest in froms), froms
    _torch_then_project(API_DOCKERFILE, "--index-url https://download.pytorch.org/whl/cpu")


def test_worker_image_is_cuda_with_a_cuda_torch_build():
    base = args_of(WORKER_DOCKERFILE).get("CUDA_IMAGE", "")
    assert re.fullmatch(r"nvidia/cuda:[0-9.]+-(base|runtime|cudnn-runtime)-ubuntu[0-9.]+", base) \
        or re.fullmatch(r"pytorch/pytorch:\S+-runtime", base), f"worker base image {base!r}"
    froms = [rest for word, rest in instructions(WORKER_DOCKERFILE) if word == "FROM"]
    assert froms and all(rest.startswith("${CUDA_IMAGE}") for rest in froms), froms
    assert re.fullmatch(r"cu[0-9]+", args_of(WORKER_DOCKERFILE).get("TORCH_CUDA", "")), "TORCH_CUDA"
    _torch_then_project(WORKER_DOCKERFILE, '--index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"')


@pytest.mark.parametrize("path", [API_DOCKERFILE, WORKER_DOCKERFILE], ids=lambda p: p.name)
def test_image_runs_as_the_shared_non_root_user(path):
    users = [rest for word, rest in instructions(path) if word == "USER"]
    assert users, f"{path.name} has no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    # One uid in both images, so each can read and write what the other put on the shared volume.
    assert "--uid 10001" in " ".join(_run_lines(path)), f"{path.name}: create the user with uid 10001"


@pytest.mark.parametrize(("path", "probe"), [(API_DOCKERFILE, "/healthz"), (WORKER_DOCKERFILE, "inspect ping")],
                         ids=["api", "worker"])
def test_image_has_a_health_check(path, probe):
    checks = [rest for word, rest in instructions(path) if word == "HEALTHCHECK"]
    assert checks and "NONE" not in checks[-1].split(), f"{path.name} has no HEALTHCHECK"
    assert probe in checks[-1], f"{path.name}: HEALTHCHECK should probe {probe!r}"
    command = checks[-1].split(" CMD ", 1)[1].strip()
    if command.startswith("["):  # exec form: Docker silently runs bad JSON as a shell string
        json.loads(command)


@pytest.mark.parametrize(("path", "role"), [(API_DOCKERFILE, "api"), (WORKER_DOCKERFILE, "worker")],
                         ids=["api", "worker"])
def test_image_starts_through_the_entrypoint(path, role):
    steps = instructions(path)
    assert any(word == "COPY" and "docker/entrypoint.sh /usr/local/bin/adacs-entrypoint" in rest
               for word, rest in steps), f"{path.name} does not install docker/entrypoint.sh"
    assert json.loads([rest for word, rest in steps if word == "ENTRYPOINT"][-1]) == ["adacs-entrypoint"]
    assert json.loads([rest for word, rest in steps if word == "CMD"][-1]) == [role]


def test_entrypoint_is_executable_and_parses():
    _read(ENTRYPOINT)
    assert ENTRYPOINT.stat().st_mode & 0o111, "docker/entrypoint.sh must be executable (chmod +x)"
    checked = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_entrypoint_starts_the_right_processes():
    text = _read(ENTRYPOINT)
    assert "uvicorn service.main:app" in text and "--port 8000" in text
    assert "celery --app worker.celery_app:app worker" in text
    assert '--hostname "celery@%h"' in text, "the health checks ping celery@HOSTNAME"
    assert "${WORKER_QUEUES:-inference,training}" in text


def test_entrypoint_migrates_with_functions_that_exist():
    text = _read(ENTRYPOINT)
    assert "from service.db.migrate import upgrade_database" in text
    assert "from service.core.config import get_settings" in text
    from service.core.config import get_settings
    from service.db.migrate import upgrade_database

    assert callable(get_settings) and callable(upgrade_database)


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    patterns = {line.strip().rstrip("/") for line in _read(ROOT / ".dockerignore").splitlines()
                if line.strip() and not line.startswith("#")}
    missing = {".git", ".venv", "runs", "data", "benchmarks/runs", ".env"} - patterns
    assert missing == set(), f".dockerignore must exclude {sorted(missing)}"


def test_the_installed_package_carries_the_starter_model_and_migrations():
    """The images `pip install` the project: its package data must hold what `serve`/`api` read at start."""
    import re

    line = re.search(r"^service = \[(.*)\]$", _read(ROOT / "pyproject.toml"), re.MULTILINE)  # package-data
    assert line, "pyproject.toml has no [tool.setuptools.package-data] entry for service"
    data = re.findall(r'"([^"]+)"', line.group(1))
    service_dir = ROOT / "service"
    for needed in ("alembic.ini", "starter/acdc-voxelmorph-adacs/model.safetensors",
                   "starter/acdc-voxelmorph-adacs/config.json", "starter/acdc-voxelmorph-adacs/card.json"):
        assert (service_dir / needed).is_file(), needed
        assert any((service_dir / needed).match(str(service_dir / pattern)) for pattern in data), needed
    entrypoint = _read(ROOT / "docker" / "entrypoint.sh")
    assert "install_starter_model" in entrypoint and "INSTALL_STARTER_MODEL" in entrypoint
