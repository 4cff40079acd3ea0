"""The web viewer: static pages served by the API at ``/``, calling only the public API.

``/`` is the single page (``static/index.html``); its scripts, styles and the image library are
under ``/ui/``. Both are public, like ``/docs``: the page carries no data, and every API call it
makes sends the key the user typed (kept in the tab's ``sessionStorage``). Nothing comes from a
CDN, so the viewer works on a hospital network with no way out; a Content-Security-Policy of
``'self'`` makes the browser refuse any other host, should a change ever try.

Images are drawn by NiiVue (``@niivue/niivue``, BSD-2-Clause, a WebGL2 viewer from the
neuroimaging community), pinned in ``package-lock.json``. ``npm ci && npm run build:web`` (run by
``.ci/install``) copies its self-contained ES-module bundle to ``static/vendor/niivue.js``, which
git ignores and the wheel and the Docker image carry as package data. Without it (``pip install``
on a machine without npm), the API runs as before and ``/`` answers 503 with these commands.

Why NiiVue rather than a plain canvas with a small NIfTI reader. Both were built and timed in
headless Chromium 156 (software WebGL through SwiftShader, 2 shared cores, a 216×256×10 float
volume with a label overlay, five runs, medians): the canvas drew its first image in 0.15-0.20 s
against 1.6-2.9 s for NiiVue (a 3.1 MB module to parse and shaders to compile), and both changed
slice in under 1 ms. The canvas is faster to the first image; NiiVue serves the user better once
it is there: overlays are placed in physical space (a moving mask on another grid lands where it
lies in the patient, not on the fixed image's voxel indices), slices are shown in anatomical
orientation with their labels, zoom, pan and window/level come with it, 4-D cines play by frame,
and its readers are the field's. A small reader would have to grow all of that. A browser without
WebGL2 gets the service's own ``preview.png`` instead of the interactive view.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

__all__ = ["add_web_ui", "swagger_ui_dir", "STATIC_DIR", "BUNDLE", "UI_PREFIX", "CSP", "missing_bundle_page"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
BUNDLE = "vendor/niivue.js"  # relative to STATIC_DIR; built at install time, not in git
UI_PREFIX = "/ui"
# Only this server: scripts, styles, images, fetches. blob: for downloads and decoded images.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; frame-ancestors 'self'")
BUILD_HINT = "npm ci && npm run build:web"
KEYS_META = '<meta name="adacs-api-keys" content="'  # index.html's placeholder, completed per request


def swagger_ui_dir() -> Path:
    """Swagger UI's files for ``/docs``: version 5 when ``npm run build:web`` copied it, else the PyPI bundle's.

    The PyPI package ships Swagger UI 4.15, which cannot render an OpenAPI 3.1 schema (FastAPI's): its
    page says "Unable to render this definition". Version 5 comes from npm with NiiVue.
    """
    built = STATIC_DIR / "vendor" / "swagger-ui"
    if (built / "swagger-ui-bundle.js").is_file():
        return built
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def missing_bundle_page() -> str:
    """What ``/`` says when the image library was never built."""
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>AdaCS viewer not built</title>"
            "</head><body><h1>The web viewer is not built</h1>"
            "<p>The API works (see <a href=\"docs\">/docs</a>), but the viewer's image library was not installed. "
            f"From the repository root run <code>{BUILD_HINT}</code> (or <code>bash .ci/install</code>), "
            "then reload this page. It needs Node.js and npm once, at install time; the viewer itself "
            "loads nothing from the internet.</p></body></html>")


def add_web_ui(app: FastAPI, directory: Path = STATIC_DIR) -> None:
    """Serve the viewer at ``/`` and its files under ``/ui/`` as public routes outside the schema.

    Plain routes, not a mount: the auth middleware reads routes' rules, and a route that declares no
    principal is public (``service.api.auth``), as the browser cannot send a key with a script tag.
    """
    files = StaticFiles(directory=directory, check_dir=False)

    async def index(request: Request) -> Response:
        if not (directory / BUNDLE).is_file():  # looked at per request: building it needs no restart
            return HTMLResponse(missing_bundle_page(), status_code=503, headers={"Cache-Control": "no-store"})
        # The one thing the page needs to know before its first call: whether to ask for a key (asking
        # the API would cost an anonymous 401, which the browser reports as an error).
        keys = "on" if request.state.settings.api_keys_enabled else "off"
        page = (directory / "index.html").read_text(encoding="utf-8").replace(KEYS_META, KEYS_META + keys, 1)
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    async def asset(request: Request) -> Response:
        # StaticFiles resolves the path and refuses any that leaves the folder (.., links, absolute).
        response = await files.get_response(request.path_params["path"], request.scope)
        response.headers["Cache-Control"] = "no-cache"  # revalidated (ETag): a reinstall shows at once
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    app.add_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route(f"{UI_PREFIX}/{{path:path}}", asset, methods=["GET", "HEAD"], include_in_schema=False)
