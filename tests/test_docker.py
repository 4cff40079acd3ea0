"""The deployment: docker-compose.yml, the Dockerfiles, their entrypoint and health checks, the GPU
workers' generator, the smoke test and the one list of environment variables (docker/ENVIRONMENT.md).

Static checks, so no Docker engine is needed: the compose file is read with PyYAML, the
Dockerfiles instruction by instruction, the scripts with ``bash -n``. A missing file, service,
health check, volume or documented variable fails; nothing here skips. docker/smoke-test.sh, which
CI runs after this suite, builds and runs the same files for real.
"""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import time
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
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
PROXY_DIR = ROOT / "docker" / "proxy"
GPU_WORKERS = ROOT / "docker" / "gpu-workers.sh"
SMOKE_TEST = ROOT / "docker" / "smoke-test.sh"
ENVIRONMENT_MD = ROOT / "docker" / "ENVIRONMENT.md"

SERVICES = ("redis", "postgres", "api", "worker", "worker-cpu", "beat", "flower", "proxy")
OUR_SERVICES = ("api", "worker", "worker-cpu")  # run this repository's code on the artifact volume
WORKERS = ("worker", "worker-cpu")
PROFILES = {"worker": ["gpu"], "worker-cpu": ["cpu"], "proxy": ["tls"]}
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


def default_of(value: str | None) -> str | None:
    """What a compose value gives when the shell sets nothing: the default of ``${NAME:-default}``."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-([^}]*)\}", value or "")
    return match.group(1) if match else value


def as_words(command: str | list) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def mounts(name: str) -> dict[str, str]:
    """Named or bound sources of a service's volumes, by target path (short and long syntax)."""
    targets = {}
    for volume in service(name).get("volumes") or []:
        if isinstance(volume, dict):
            targets[volume["target"]] = volume.get("source", "")
        else:  # SOURCE:TARGET[:MODE], where SOURCE may be ${NAME:-default}
            source, target = re.match(r"(\$\{[^}]*\}|[^:]*):([^:]*)", volume).groups()
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


def test_workers_and_the_proxy_sit_in_profiles_so_a_cpu_host_never_builds_cuda():
    """`--profile cpu build` must not touch the GPU worker, whose CUDA base a CPU-only host cannot have."""
    for name, profiles in PROFILES.items():
        assert service(name).get("profiles") == profiles, f"{name!r} belongs in profile {profiles}"
    in_profiles = [name for name in SERVICES if name not in PROFILES and service(name).get("profiles")]
    assert in_profiles == [], f"every `docker compose --profile X up` must start {in_profiles}: give them no profile"
    built = [name for name in SERVICES if "build" in service(name) and not service(name).get("profiles")]
    assert built == ["api"], f"outside the profiles only api may be built, not {built}"


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


def _gpu_devices(definition: dict) -> list[dict]:
    return (definition.get("deploy") or {}).get("resources", {}).get("reservations", {}).get("devices") or []


def test_gpu_worker_is_pinned_to_one_gpu_with_one_process_and_cpu_worker_to_none():
    devices = _gpu_devices(service("worker"))
    assert len(devices) == 1, "the GPU worker reserves exactly one device entry"
    device = devices[0]
    assert device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", []), device
    # Pinned, not `count: 1`: N replicas of `count: 1` would all be given GPU 0.
    assert device.get("device_ids") == ["0"] and "count" not in device, device
    env = environment("worker")
    assert env.get("WORKER_CONCURRENCY") == "1" and env.get("CUDA_VISIBLE_DEVICES") == "0", env
    assert "deploy" not in service("worker-cpu"), "the CPU worker must not reserve a GPU"


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML plus compose's ``!override`` and ``!reset`` tags (a list or mapping that replaces, not merges)."""


_ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node)
                               if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node))
_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


@pytest.mark.parametrize(("argv", "ids"), [(["2"], ["0", "1"]), (["8"], [str(i) for i in range(8)]),
                                           (["1", "3"], ["1", "3"])], ids=["2-gpus", "8-gpus", "subset"])
def test_gpu_workers_script_writes_one_pinned_worker_per_gpu(argv, ids):
    assert GPU_WORKERS.stat().st_mode & 0o111, "docker/gpu-workers.sh must be executable"
    written = subprocess.run(["bash", str(GPU_WORKERS), *argv], capture_output=True, text=True, check=True).stdout
    services = yaml.load(written, Loader=_ComposeLoader)["services"]
    assert list(services)[0] == "worker", "the base file's worker takes the first GPU"
    assert [_gpu_devices(definition)[0]["device_ids"] for definition in services.values()] == [[i] for i in ids]
    for name, definition in list(services.items())[1:]:
        assert name == f"worker-gpu{ids[list(services).index(name)]}"
        assert definition["extends"] == {"file": "docker-compose.yml", "service": "worker"}
    # `!override` replaces the base's device list instead of appending to it (two GPUs per worker).
    assert "devices: !override" in written
    assert subprocess.run(["bash", str(GPU_WORKERS), "0", "../1"], capture_output=True).returncode == 2


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
    # Plain HTTP on this host only, unless the operator opens it (TLS goes in front: profile tls).
    assert service("api").get("ports") == ["${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8000"]
    assert as_words(service("api")["healthcheck"]["test"]) == ["CMD", "adacs-healthcheck", "api"]  # /readyz
    assert service("flower").get("ports") == ["127.0.0.1:${FLOWER_PORT:-5555}:5555"]
    for name in WORKERS:
        assert as_words(service(name)["command"]) == ["worker"]
        queues = default_of(environment(name).get("WORKER_QUEUES"))
        assert set((queues or "").split(",")) == {"inference", "training"}
        assert as_words(service(name)["healthcheck"]["test"]) == ["CMD", "adacs-healthcheck", "worker"]


def test_proxy_terminates_tls_in_front_of_the_api():
    proxy = service("proxy")
    assert proxy["build"] == {"context": "docker/proxy"}
    assert any(str(port).endswith(":8443") for port in proxy.get("ports", []))
    assert mounts("proxy").get("/etc/adacs-tls") == "${TLS_CERT_DIR:-proxy-tls}"
    assert "proxy-tls" in (compose().get("volumes") or {})
    assert proxy["depends_on"] == {"api": {"condition": "service_started"}}  # up even while workers are down
    assert "https://127.0.0.1:8443/healthz" in as_words(proxy["healthcheck"]["test"])
    conf = _read(PROXY_DIR / "nginx.conf")
    for directive in ("listen 8443 ssl", "proxy_pass http://api:8000;", "proxy_set_header X-Forwarded-Proto https;",
                      "proxy_request_buffering off;", "proxy_buffering off;", "client_max_body_size 0;"):
        assert directive in conf, f"docker/proxy/nginx.conf lacks {directive!r}"
    assert "/etc/adacs-tls/tls.crt" in conf and "/etc/adacs-tls/tls.key" in conf
    assert [rest for word, rest in instructions(PROXY_DIR / "Dockerfile") if word == "FROM"] == ["${DEBIAN_IMAGE}"]
    entrypoint = _read(PROXY_DIR / "entrypoint.sh")
    assert "openssl req -x509" in entrypoint and "exec nginx" in entrypoint
    assert subprocess.run(["sh", "-n", str(PROXY_DIR / "entrypoint.sh")]).returncode == 0


def test_beat_runs_the_reaper_with_the_api_settings():
    assert as_words(service("beat")["command"]) == ["beat"]
    assert service("beat")["image"] == service("api")["image"]
    beat = {k: v for k, v in environment("beat").items() if k.startswith("ADACS_")}
    assert beat == {k: v for k, v in environment("api").items() if k.startswith("ADACS_")}
    entrypoint = _read(ROOT / "docker" / "entrypoint.sh")
    block = entrypoint[entrypoint.index("  beat)"):entrypoint.index("  migrate)")]
    # celery beat, started from Python with a hook that marks every publish for the health check.
    assert 'app.start(["beat", *sys.argv[1:]])' in block and "from worker.celery_app import app" in block
    assert "after_task_publish" in block and '"/tmp/celerybeat.sent"' in block
    assert "--pidfile /tmp/celerybeat.pid" in block
    assert as_words(service("beat")["healthcheck"]["test"]) == ["CMD", "adacs-healthcheck", "beat"]


def _healthcheck_module():
    spec = importlib.util.spec_from_file_location("adacs_healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_beat_health_check_wants_a_recent_publish(tmp_path, monkeypatch):
    health = _healthcheck_module()
    pid_file, mark = tmp_path / "celerybeat.pid", tmp_path / "celerybeat.sent"
    monkeypatch.setattr(health, "BEAT_PID_FILE", pid_file)
    monkeypatch.setattr(health, "BEAT_SENT_MARK", mark)
    monkeypatch.setattr(health, "beat_deadline_s", lambda: 120.0)
    with pytest.raises(SystemExit, match="no running beat"):
        health.check_beat()
    pid_file.write_text(f"{os.getpid()}\n")
    assert "nothing due yet" in health.check_beat()  # started, no round due yet
    with pytest.raises(SystemExit, match="published no task since it started"):
        health.check_beat(now=time.time() + 121)
    mark.touch()
    assert "published 0 s ago" in health.check_beat()
    with pytest.raises(SystemExit, match=r"published no task for 1\d\d s \(limit 120 s\)"):
        health.check_beat(now=time.time() + 150)
    assert health.main([]) == 2


def test_beat_deadline_follows_the_shortest_schedule(monkeypatch):
    from service.core.config import get_settings

    monkeypatch.setenv("ADACS_REAPER_INTERVAL_S", "5")
    get_settings.cache_clear()
    try:
        assert _healthcheck_module().beat_deadline_s() == 2 * 5 + 60
    finally:
        get_settings.cache_clear()


def test_first_key_command_migrates_a_fresh_database_first():
    """`docker compose run --rm api keys create ...` works before the first `up` ever migrated."""
    entrypoint = _read(ENTRYPOINT)
    block = entrypoint[entrypoint.index("  keys)"):]
    block = block[:block.index(";;")]
    assert block.split() == ["keys)", "migrate", "exec", "python", "-m", "service.cli_keys", '"$@"']
    assert "file=sys.stderr" in entrypoint, "the migration's message must not mix with the printed key"
    readme = _read(ROOT / "README.md")
    assert "docker compose run --rm api keys create --name" in readme


def test_services_use_the_right_images():
    assert service("api")["build"]["dockerfile"] == "docker/api.Dockerfile"
    assert service("worker")["build"]["dockerfile"] == "docker/worker.Dockerfile"
    # The CPU worker runs the API's image as built once: it has no build of its own.
    assert "build" not in service("worker-cpu") and service("worker-cpu")["image"] == service("api")["image"]
    assert service("flower")["image"].startswith("mher/flower:")


# --- docker/ENVIRONMENT.md: every setting documented -------------------------------------------

def test_every_variable_compose_uses_is_documented():
    used = interpolated(_read(COMPOSE))
    for name in (*OUR_SERVICES, "beat", "proxy"):
        used |= set(environment(name))
        used |= set(_build_args(name))
    assert used - set(documented()) == set(), "document these in docker/ENVIRONMENT.md"


def _build_args(name: str) -> list[str]:
    args = (service(name).get("build") or {}).get("args") or []
    return list(args) if isinstance(args, dict) else [arg.split("=")[0] for arg in args]


def _section(title: str) -> set[str]:
    """The variables of one table of docker/ENVIRONMENT.md (the section headed ``## title...``)."""
    text = _read(ENVIRONMENT_MD)
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]*)`", text[start:end if end > 0 else None], re.MULTILINE))


def test_every_documented_compose_variable_is_used():
    used = interpolated(_read(COMPOSE)) | set(_build_args("worker"))
    assert _section("Compose variables") - used == set(), "documented but docker-compose.yml never reads them"


def test_every_variable_the_images_read_is_documented():
    used = {name for name in interpolated(_read(ENTRYPOINT)) if name.isupper()}
    used |= {name for name in interpolated(_read(PROXY_DIR / "entrypoint.sh")) if name.isupper()}
    used |= set(re.findall(r"os\.environ\.get\(\"([A-Z_]+)\"", _read(HEALTHCHECK)))
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


def test_every_application_setting_reaches_the_api_beat_and_every_worker():
    """Set in `.env`, any ADACS_* setting arrives: none is silently dropped by the compose file."""
    from worker.settings import WorkerSettings

    names = {f"ADACS_{field.upper()}" for field in Settings.model_fields}
    names |= {f"ADACS_WORKER_{field.upper()}" for field in WorkerSettings.model_fields}
    assert names == _section("Application settings")
    for name in (*OUR_SERVICES, "beat"):
        missing = names - set(environment(name))
        assert missing == set(), f"{name!r} does not get {sorted(missing)}: pass them through in docker-compose.yml"
    for name in sorted(names):
        in_compose = table_rows()[name][1]
        fixed = environment("api")[name]
        assert (in_compose == "passed through") == (fixed is None), f"{name}: ENVIRONMENT.md says {in_compose!r}"


SERVICE_GROUPS = {"api": ["api"], "beat": ["beat"], "workers": ["worker", "worker-cpu"], "GPU workers": ["worker"],
                  "worker-cpu": ["worker-cpu"], "proxy": ["proxy"]}


def test_every_process_setting_reaches_the_services_its_row_names():
    """"In compose" reads `services: passed through` or `services: `value``, parts joined by `;`."""
    for name in sorted(_section("Process settings")):
        for part in table_rows()[name][1].split(";"):
            groups, _, how = part.strip().partition(": ")
            for group in groups.split(", "):
                assert group in SERVICE_GROUPS, f"{name}: unknown services {group!r} in ENVIRONMENT.md"
                for target in SERVICE_GROUPS[group]:
                    env = environment(target)
                    assert name in env, f"{name} does not reach {target!r}, whose row in ENVIRONMENT.md names it"
                    if how == "passed through":
                        assert env[name] is None or env[name].startswith("${" + name + ":-"), (name, target)
                    else:
                        assert f"`{env[name]}`" == how, f"{name} on {target!r}: compose {env[name]!r}, doc {how}"


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


def test_worker_image_builds_without_cuda_when_asked():
    """TORCH_CUDA=cpu swaps the torch index, and the build's check follows the argument (CI builds it so)."""
    runs = " ".join(_run_lines(WORKER_DOCKERFILE))
    check = next(run for run in _run_lines(WORKER_DOCKERFILE) if "torch.version.cuda" in run)
    assert "assert (torch.version.cuda is None) == cpu" in check and "cpu = sys.argv[1] == 'cpu'" in check
    assert check.rstrip().endswith('"${TORCH_CUDA}"'), "the check must be given TORCH_CUDA"
    # Python comes from apt only where the base has none (the CUDA image); python:* keeps its own.
    assert "if ! python3 -m venv --help" in runs and "if ! command -v python3" in runs


@pytest.mark.parametrize("path", [API_DOCKERFILE, WORKER_DOCKERFILE], ids=lambda p: p.name)
def test_image_runs_as_the_shared_non_root_user(path):
    users = [rest for word, rest in instructions(path) if word == "USER"]
    assert users, f"{path.name} has no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    # One uid in both images, so each can read and write what the other put on the shared volume.
    assert "--uid 10001" in " ".join(_run_lines(path)), f"{path.name}: create the user with uid 10001"


@pytest.mark.parametrize(("path", "probe"), [(API_DOCKERFILE, ["adacs-healthcheck", "api", "--live"]),
                                           (WORKER_DOCKERFILE, ["adacs-healthcheck", "worker"])],
                         ids=["api", "worker"])
def test_image_has_a_health_check(path, probe):
    checks = [rest for word, rest in instructions(path) if word == "HEALTHCHECK"]
    assert checks and "NONE" not in checks[-1].split(), f"{path.name} has no HEALTHCHECK"
    # Exec form, parsed: Docker silently runs bad JSON as a shell string.
    assert json.loads(checks[-1].split(" CMD ", 1)[1].strip()) == probe, f"{path.name}: HEALTHCHECK"
    assert any(word == "COPY" and "docker/healthcheck.py /usr/local/bin/adacs-healthcheck" in rest
               for word, rest in instructions(path)), f"{path.name} does not install docker/healthcheck.py"


def test_health_check_script_runs_with_the_images_python():
    assert HEALTHCHECK.read_text().startswith("#!/usr/bin/env python\n")
    checked = subprocess.run(["python3", str(HEALTHCHECK)], capture_output=True, text=True)
    assert checked.returncode == 2 and "usage: adacs-healthcheck {api|worker|beat}" in checked.stderr


@pytest.mark.parametrize(("path", "role"), [(API_DOCKERFILE, "api"), (WORKER_DOCKERFILE, "worker")],
                         ids=["api", "worker"])
def test_image_starts_through_the_entrypoint(path, role):
    steps = instructions(path)
    assert any(word == "COPY" and "docker/entrypoint.sh /usr/local/bin/adacs-entrypoint" in rest
               for word, rest in steps), f"{path.name} does not install docker/entrypoint.sh"
    assert json.loads([rest for word, rest in steps if word == "ENTRYPOINT"][-1]) == ["adacs-entrypoint"]
    assert json.loads([rest for word, rest in steps if word == "CMD"][-1]) == [role]


@pytest.mark.parametrize("path", [ENTRYPOINT, SMOKE_TEST, GPU_WORKERS, PROXY_DIR / "entrypoint.sh"],
                         ids=lambda p: p.name)
def test_scripts_are_executable_and_parse(path):
    _read(path)
    assert path.stat().st_mode & 0o111, f"{path.relative_to(ROOT)} must be executable (chmod +x)"
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_ci_runs_the_smoke_test_after_the_suite():
    text = _read(ROOT / ".ci" / "run")
    suite, smoke = text.find("bash .ci/test"), text.find("bash docker/smoke-test.sh")
    assert 0 <= suite < smoke, ".ci/run must run docker/smoke-test.sh after the test suite"
    # CI here has no registry: docker-offline's prepare.sh (beside the clone, or at /work/shared) comes first.
    prepare = text.find('"$shared/tools/docker-offline/prepare.sh" -f docker-compose.yml')
    assert "for shared in ../shared /work/shared" in text and 0 <= suite < prepare < smoke, \
        ".ci/run must run docker-offline's prepare.sh before the smoke test"
    script = _read(SMOKE_TEST)
    assert "down -v" in script and "trap " in script, "the smoke test must remove its stack and volumes"
    assert "--scale worker-cpu=2" in script, "two CPU workers, to show jobs spread over them"
    for step in ("docker kill", "restart redis", "keys create", "TORCH_CUDA=cpu"):
        assert step in script, f"docker/smoke-test.sh lacks the step {step!r}"


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
    for needed in ("alembic.ini", "starter/acdc-2d/model.safetensors",
                   "starter/acdc-2d/config.json", "starter/acdc-2d/card.json"):
        assert (service_dir / needed).is_file(), needed
        assert any((service_dir / needed).match(str(service_dir / pattern)) for pattern in data), needed
    entrypoint = _read(ROOT / "docker" / "entrypoint.sh")
    assert "install_starter_model" in entrypoint and "INSTALL_STARTER_MODEL" in entrypoint
