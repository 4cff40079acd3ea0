"""/docs works on a network with no way out: the page and everything it loads come from this server.

Over real HTTP, with API keys on (the deployed setting): the page and its files are public, and
no URL in the page points at another host.
"""

from __future__ import annotations

import re

EXTERNAL = re.compile(r"(?:https?:)?//[^\s'\"<>]+", re.IGNORECASE)


def test_docs_page_loads_only_files_of_this_server(serve):
    server = serve(api_keys_enabled=True)
    page = server.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text
    assert EXTERNAL.findall(page.text) == [], "the docs page names another host: it would stay blank offline"
    loaded = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(loaded), loaded
    for url in loaded:
        response = server.client.get(url)  # no key: the docs are public like the schema
        assert response.status_code == 200 and response.content, url
    assert "SwaggerUIBundle" in server.client.get("/docs/assets/swagger-ui-bundle.js").text
    assert "'/openapi.json'" in page.text and server.client.get("/openapi.json").status_code == 200


def test_docs_serve_no_other_file(serve):
    server = serve(api_keys_enabled=True)
    assert server.client.get("/docs/assets/index.html").status_code == 404
    # However the client normalises it, a path out of the folder reaches no file.
    assert server.client.get("/docs/assets/..%2Fpyproject.toml").status_code in (401, 404)
    assert server.client.get("/redoc").status_code == 401  # no such page: an unknown path needs a key
