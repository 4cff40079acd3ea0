"""The web viewer in a real browser: Debian's headless Chromium, driven by Playwright, against `adacs serve`.

The embedded service runs as users start it (its own data folder and port, a real Celery worker,
API keys on, so every call the page makes must carry the key typed into it). Through the pages, as a
user would: a NIfTI phantom pair with masks is registered and looked at (the canvas shows the image
with coloured outlines; the Dice shown is the report's; slices step by keyboard and slider; the
before/after toggle and the grid and Jacobian overlays change the picture), a phantom cine is
tracked and played, a tiny training job is started, watched (its chart grows from the server-sent
events) and cancelled, and a model version is promoted. The browser may reach only the server: every
other request is aborted and recorded, and none may be attempted; no console error may appear.
Screenshots of each page go to tests/web/screenshots/ (git-ignored; CI keeps them as artifacts).

A missing Chromium, Playwright or viewer bundle fails these tests (`bash .ci/install` provides all
three); it never skips them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from service.web import BUNDLE, STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("ADACS_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
ROLES = ("fixed", "moving", "moving_mask", "fixed_mask")
LABELS = '{"1": "LV", "2": "myocardium"}'
# Pixel statistics of the viewer's WebGL canvas (its drawing buffer is preserved, so it can be read).
CANVAS_STATS = """(selector) => {
  const canvas = document.querySelector(selector);
  const copy = new OffscreenCanvas(canvas.width, canvas.height);
  const g = copy.getContext("2d");
  g.drawImage(canvas, 0, 0);
  const d = g.getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0, coloured = 0, sum = 0, sum2 = 0, hash = 0;
  for (let i = 0; i < d.length; i += 4) {
    const v = (d[i] + d[i + 1] + d[i + 2]) / 3;
    sum += v; sum2 += v * v; if (v > 16) lit++;
    if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) coloured++;
    hash = (hash * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) % 1000000007;
  }
  const n = d.length / 4;
  return {lit: lit / n, coloured, std: Math.sqrt(Math.max(0, sum2 / n - (sum / n) ** 2)), hash, n};
}"""


def _require_browser() -> None:
    """Fail (never skip) when what the browser test needs is missing, naming how to get it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("Playwright is not installed: bash .ci/install (pip install -e '.[dev]')", pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: bash .ci/install installs Debian's chromium "
                    "(or set ADACS_TEST_CHROMIUM)", pytrace=False)
    if not (STATIC_DIR / BUNDLE).is_file():
        pytest.fail(f"the viewer's bundle {STATIC_DIR / BUNDLE} is not built: npm ci && npm run build:web",
                    pytrace=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`adacs serve` in a subprocess with API keys on, and an admin key made in its database."""

    def __init__(self, folder: Path) -> None:
        self.port, self.data, self.log = _free_port(), folder / "data", folder / "serve.log"
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ADACS_")} | {
            "ADACS_API_KEYS_ENABLED": "true", "ADACS_PROGRESS_MIN_INTERVAL_S": "0.2",
            "ADACS_HEARTBEAT_INTERVAL_S": "0.5", "ADACS_WORKER_TORCH_THREADS": "1"}
        command = [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--data-dir", str(self.data)]
        with open(self.log, "wb") as handle:
            self.process = subprocess.Popen(command, cwd=folder, env=env, stdout=handle, stderr=subprocess.STDOUT)

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited:\n{self.tail()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        pytest.fail(f"/readyz never answered 200:\n{self.tail()}", pytrace=False)

    def make_key(self) -> None:
        from service.cli_keys import create_api_key
        from service.db import make_engine, session_scope

        engine = make_engine(f"sqlite:///{self.data / 'adacs.db'}")
        with session_scope(engine) as session:
            self.key = create_api_key(session, "browser-test", ["admin"])
        engine.dispose()
        self.api = httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=30)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    _require_browser()
    live = Server(tmp_path_factory.mktemp("web"))
    try:
        live.wait_ready()
        live.make_key()
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--disable-background-networking", "--disable-component-update",
                                                    "--no-first-run", "--disable-sync"])
        yield chromium
        chromium.close()


class Watched:
    """A page whose console errors and requests to any other host are recorded (those requests aborted)."""

    def __init__(self, context, server: Server) -> None:
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.server = server
        host = urlsplit(server.url).netloc

        def route(route) -> None:
            url = route.request.url
            if urlsplit(url).netloc == host or url.startswith(("blob:", "data:")):
                route.continue_()
            else:
                self.outside.append(url)
                route.abort()

        context.route("**/*", route)
        self.page = context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, page: str) -> None:
        """Open `#/page` and type the API key into the field the page shows when keys are on."""
        self.page.goto(f"{self.server.url}/#/{page}")
        self.page.wait_for_selector("main[data-ready]")
        if self.page.is_visible("#key-form"):
            self.page.fill("#api-key", self.server.key)
            self.page.press("#api-key", "Enter")
        self.page.wait_for_selector(f"main[data-page={page}] h1")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))

    def canvas(self, selector: str) -> dict:
        return self.page.evaluate(CANVAS_STATS, f"{selector} canvas")

    def assert_clean(self) -> None:
        assert self.outside == [], f"the page tried to leave the server: {self.outside}"
        assert self.errors == [], f"console errors: {self.errors}"


@pytest.fixture
def watched(browser, server) -> Watched:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        yield Watched(context, server)
    finally:
        context.close()


def _write(array: np.ndarray, path: Path, spacing=(1.5, 1.5, 8.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> dict[str, Path]:
    """A 64×64×4 phantom pair with both masks (labels 1 and 2), as NIfTI."""
    from models.data.synthetic import PhantomConfig, make_phantom_pair

    pairs = [make_phantom_pair(PhantomConfig(size=64, seed=11), i) for i in range(4)]
    folder = tmp_path_factory.mktemp("stack")
    return {role: _write(np.stack([getattr(p, role) for p in pairs]), folder / f"{role}.nii.gz") for role in ROLES}


def test_every_page_and_the_docs_render_with_nothing_from_outside(watched, server):
    watched.open("register")
    page = watched.page
    assert page.evaluate("sessionStorage.getItem('adacs.apiKey')") == server.key
    # Each page's heading, and something it can only show after an API call made with the key.
    for name, heading, loaded in [("register", "Register", "select[name=model] option[value='starter:1']"),
                                  ("cine", "Track", "select[name=model] option[value='starter:1']"),
                                  ("training", "Train", "input[name='hyperparameters.epochs']"),
                                  ("models", "Models", "[data-model=starter]"), ("jobs", "Jobs", "text=Trainings (")]:
        page.click(f"nav a[href='#/{name}']")
        page.wait_for_selector(f"main[data-page={name}] h1")
        assert heading in page.inner_text("main h1")
        assert page.get_attribute(f"nav a[href='#/{name}']", "aria-current") == "page"
        page.wait_for_selector(loaded, state="attached")
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "AdaCS" in page.inner_text(".swagger-ui .info .title")
    watched.shot("docs")
    watched.assert_clean()
