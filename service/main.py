"""The FastAPI app: ``create_app(settings)`` assembles it; ``uvicorn service.main:app`` serves it.

Building the app reads no settings and opens nothing, so ``app`` below costs only imports: the
settings (``get_settings()`` unless given), the engine, the session factory and the artifact store
are made in the lifespan, when a server starts the app, and reach requests as lifespan state.
This module and everything it imports stay free of torch and of the worker (a test checks it).

``/docs`` is Swagger UI served from this server's files, not from a CDN: on a network with no way
out (a hospital's) a CDN's page would stay blank. They are Swagger UI 5 from npm when the web
viewer was built (``service.web.swagger_ui_dir``), else those of the ``swagger-ui-bundle`` package.
ReDoc, which FastAPI also loads from a CDN and no package ships for us, is left out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from service.api.auth import AuthMiddleware, route_rules
from service.api.errors import install_error_handler
from service.api.limits import BodySizeLimitMiddleware
from service.api.metrics import Metrics, MetricsMiddleware
from service.api.routes import cine, datasets, health, models, registrations, training
from service.core.config import Settings, get_settings
from service.core.privacy import use_private_umask
from service.db import make_engine, make_session_factory
from service.jobs.tasks import TaskSender
from service.storage import LocalArtifactStore
from service.web import add_web_ui, swagger_ui_dir

__all__ = ["create_app", "operation_id", "app", "DOCS_ASSETS"]

DOCS_ASSETS = "/docs/assets"  # Swagger UI's own files, under the page that loads them
# The only files the page loads; nothing else of the package is served.
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def operation_id(route: APIRoute) -> str:
    """``<tag>-<function name>``, e.g. ``models-list_models``: stable for generated clients."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def _version() -> str:
    try:
        return version("adacs-registration")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs`` and its files, as plain routes that declare no principal: public like FastAPI's own."""
    files = {name: swagger_ui_dir() / name for name in SWAGGER_UI_FILES}  # 5.x when built (service.web)

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy that mounts the API below /
        assets = f"{root}{DOCS_ASSETS}"
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{assets}/swagger-ui.css",
                                   swagger_favicon_url=f"{assets}/favicon-32x32.png",
                                   # No online validator badge: it would send the schema out.
                                   swagger_ui_parameters={"validatorUrl": None})

    async def asset(request: Request) -> Response:
        path = files.get(request.path_params["name"])
        if path is None:
            return Response(status_code=404)
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(f"{DOCS_ASSETS}/{{name}}", asset, include_in_schema=False)


def _lifespan(settings: Settings | None, inference_queue: str | None, training_queue: str | None):
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        resolved = settings or get_settings()
        use_private_umask()  # uploads and the SQLite file are patient data: owner-only (service.core.privacy)
        if (resolved.broker_url or "").startswith("filesystem"):
            resolved.ensure_directories()  # the embedded broker's folders must exist before a task is sent
        engine = make_engine(resolved.database_url, busy_timeout_ms=resolved.db_busy_timeout_ms)
        tasks = TaskSender(resolved, inference_queue, training_queue)  # connects on the first send, not here
        try:
            yield {"settings": resolved, "engine": engine, "session_factory": make_session_factory(engine),
                   "store": LocalArtifactStore(resolved.artifact_dir), "tasks": tasks}
        finally:
            tasks.close()
            engine.dispose()

    return lifespan


def create_app(settings: Settings | None = None, *, inference_queue: str | None = None,
               training_queue: str | None = None) -> FastAPI:
    """The API. ``settings`` default to ``get_settings()``, read when the server starts the app;
    registrations go to ``inference_queue``, trainings to ``training_queue`` (default: the settings')."""
    app = FastAPI(title="AdaCS registration", version=_version(), docs_url=None, redoc_url=None,
                  lifespan=_lifespan(settings, inference_queue, training_queue),
                  generate_unique_id_function=operation_id,
                  description="Deformable registration of medical images with adaptive correspondence scoring "
                              "(AdaCS): a model registry, registrations and trainings.")
    app.state.metrics = Metrics()
    routers = (health.router, models.router, registrations.router, cine.router, datasets.router, training.router)
    for router in routers:
        app.include_router(router)  # no prefix here: routers carry theirs (see service.api.routes)
    _add_offline_docs(app)
    add_web_ui(app)  # the viewer at / (public, outside the schema; service.web)
    install_error_handler(app)
    # Added innermost first: metrics see every answer; a key is checked before the body size, and
    # both before any body is read (401/403 come before 413 and before the body is parsed).
    app.add_middleware(BodySizeLimitMiddleware)
    # The docs' own routes (public) and every router's routes, whose paths are their full templates.
    app.add_middleware(AuthMiddleware, rules=route_rules([*app.routes, *(r for rt in routers for r in rt.routes)]))
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


app = create_app()
