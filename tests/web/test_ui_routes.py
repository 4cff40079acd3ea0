"""service/web over real HTTP, without a browser and without the built bundle: the viewer's routes.

`/` and `/ui/*` are public with keys on (a script tag cannot send a key), outside the OpenAPI schema,
serve only files of the static folder, and tell the page whether to ask for a key. Without the
bundle (`pip install` on a machine without npm) the API still runs and `/` says how to build it.
Every static file is package data, so the wheel and the Docker image carry the viewer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import service.web
from service.core.config import Settings
from service.main import create_app
from service.web import CSP, STATIC_DIR

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(live_server, sqlite_url, tmp_path, monkeypatch):
    """A server with API keys on; ``server(bundle=False)`` when the viewer was never built."""
    def start(bundle: bool = True, keys: bool = True):
        # Point BUNDLE at a file that exists (or not), so these tests never need the npm build.
        monkeypatch.setattr(service.web, "BUNDLE", "index.html" if bundle else "vendor/never-built.js")
        settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, api_keys_enabled=keys)
        return live_server(create_app(settings), settings)

    return start


def test_the_page_and_its_files_are_public_and_say_whether_keys_are_on(server):
    with server(keys=True) as live:
        page = live.client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<meta name="adacs-api-keys" content="on">' in page.text
        assert page.headers["content-security-policy"] == CSP and "default-src 'self'" in CSP
        script = live.client.get("/ui/js/main.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert live.client.get("/ui/app.css").status_code == 200
        assert live.client.get("/v1/models").status_code == 401  # the API itself still wants the key
    with server(keys=False) as live:
        assert '<meta name="adacs-api-keys" content="off">' in live.client.get("/").text


def test_the_page_loads_nothing_from_another_host():
    external = re.compile(r"(?:https?:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+", re.IGNORECASE)  # //host.domain
    for path in STATIC_DIR.rglob("*"):
        if path.suffix in {".html", ".css", ".js"} and "vendor" not in path.parts:
            assert external.findall(path.read_text(encoding="utf-8")) == [], path


def test_only_files_of_the_static_folder_are_served(server):
    with server() as live:
        assert live.client.get("/ui/nothing-here.js").status_code == 404
        for probe in ("/ui/../__init__.py", "/ui/..%2F__init__.py", "/ui/%2E%2E/%2E%2E/pyproject.toml"):
            assert live.client.get(probe).status_code in (401, 404), probe  # 401: no route took it
        assert live.client.post("/ui/js/main.js").status_code in (401, 405)


def test_without_the_bundle_the_api_runs_and_the_page_says_how_to_build_it(server):
    with server(bundle=False) as live:
        page = live.client.get("/")
        assert page.status_code == 503
        assert "npm ci && npm run build:web" in page.text and "bash .ci/install" in page.text
        assert live.client.get("/healthz").status_code == 200


def test_the_viewer_is_outside_the_schema():
    paths = create_app().openapi()["paths"]
    assert "/" not in paths and not any(path.startswith("/ui") for path in paths)


def test_every_static_file_is_package_data_and_reaches_the_image():
    """The wheel (and so the Docker image, which pip-installs service/) carries every static file."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["service.web"]
    web = STATIC_DIR.parent
    covered = {p for pattern in patterns for p in web.glob(pattern) if p.is_file()}
    tracked = {p for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert tracked - covered == set(), "static files the wheel would leave out"
    assert "static/vendor/*" in patterns and "static/vendor/swagger-ui/*" in patterns
    dockerfile = (ROOT / "docker" / "api.Dockerfile").read_text(encoding="utf-8")
    assert "COPY service /src/service" in dockerfile  # the built vendor folder goes into the build context
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")]
    assert not any(rule.startswith(("service", "**/vendor", "**/static")) for rule in ignored)
