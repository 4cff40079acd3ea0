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
  const canvas = document.querySelector(selector);  // the first canvas: the image
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


QUIET = ["--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def playwright(server):
    """Playwright, once per module (its sync API runs one instance at a time)."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="module")
def browser(playwright):
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=QUIET)
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
        """Open `#/page` (or `#/page/id`) and type the API key into the field the page shows when keys are on."""
        self.page.goto(f"{self.server.url}/#/{page}")
        self.page.wait_for_selector("main[data-ready]")
        if self.page.is_visible("#key-form"):
            self.page.fill("#api-key", self.server.key)
            self.page.press("#api-key", "Enter")
        self.page.wait_for_selector(f"main[data-page={page.split('/')[0]}] h1")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))

    def canvas(self, selector: str) -> dict:
        return self.page.evaluate(CANVAS_STATS, selector)

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


def _slice_row(page, k: int) -> dict:
    return page.evaluate("""(k) => Object.fromEntries(
        [...document.querySelectorAll(`#slice-dice tr[data-slice="${k}"] td`)]
        .map((td) => [td.dataset.label, td.dataset.value]))""", k)


def test_register_a_pair_and_look_at_it_slice_by_slice(watched, server, stack):
    watched.open("register")
    page = watched.page
    for role, path in stack.items():
        page.set_input_files(f"#register-form input[name={role}]", str(path))
    page.fill("input[name=refine_steps]", "0")
    page.fill("input[name=labels]", LABELS)
    page.click("#register-form button[type=submit]")
    page.wait_for_selector("#viewer[data-ready=true]", timeout=120_000)
    job_id = page.get_attribute("#result", "data-job")
    report = server.api.get(f"/v1/registrations/{job_id}/report").json()

    drawn = watched.canvas("#viewer canvas")
    assert drawn["lit"] > 0.3 and drawn["std"] > 10, drawn  # an image, not a blank or flat canvas
    assert drawn["coloured"] > 50, drawn  # the warped mask's coloured outlines over the grey image
    for label, entry in report["labels"].items():  # the Dice shown is the report's
        for kind in ("before", "after"):
            cell = page.locator(f"#dice td[data-label='{label}'][data-kind={kind}]")
            assert float(cell.get_attribute("data-value")) == entry[kind]["dice"]
            assert abs(float(cell.inner_text()) - entry[kind]["dice"]) <= 0.05 + 1e-9
        assert entry["name"] in page.inner_text("#dice")

    # Slices: the keyboard on the focused image, then the slider; the table row and the text follow.
    assert page.get_attribute("#viewer", "data-slices") == "4"
    start = int(page.get_attribute("#viewer", "data-slice"))
    page.focus("#viewer")
    page.keyboard.press("ArrowDown")
    assert page.get_attribute("#viewer", "data-slice") == str(start - 1)
    page.keyboard.press("Home")
    assert page.get_attribute("#viewer", "data-slice") == "0" and page.input_value("#slice") == "0"
    pictures = {0: watched.canvas("#viewer canvas")["hash"]}
    for k in (1, 3):
        page.fill("#slice", str(k))
        assert page.get_attribute("#viewer", "data-slice") == str(k)
        pictures[k] = watched.canvas("#viewer canvas")["hash"]
        assert page.get_attribute(f"#slice-dice tr[data-slice='{k}']", "class") == "current"
        row = _slice_row(page, k)
        assert {label: float(v) for label, v in row.items()} == {
            label: entry["per_slice_dice"][k] for label, entry in report["labels"].items()}
        assert f"myocardium {report['labels']['2']['per_slice_dice'][k]:.1f}"[:-1] in page.inner_text("#slice-text")
    assert len(set(pictures.values())) == 3, "stepping through slices did not change the picture"

    # Before/after and the Jacobian change the image; the grid is drawn as lines on the layer above it.
    after = watched.canvas("#viewer canvas")
    for control in ("input[name=mask][value=before]", "input[name=overlay][value=jacobian]"):
        page.check(control)
        assert watched.canvas("#viewer canvas")["hash"] != after["hash"], control
    assert watched.canvas("#viewer canvas.vector")["coloured"] == 0
    page.check("input[name=overlay][value=grid]")
    assert watched.canvas("#viewer canvas.vector")["coloured"] > 500  # yellow lines
    page.check("#reference")
    assert watched.canvas("#viewer canvas")["hash"] != after["hash"]  # the fixed mask's white outlines
    page.uncheck("#reference")
    page.check("input[name=mask][value=after]")
    page.check("input[name=overlay][value=grid]")
    page.fill("#slice", "2")
    # preview.png is listed before it exists: the service draws it when first downloaded.
    files = sorted(o["file"] for o in server.api.get(f"/v1/registrations/{job_id}").json()["outputs"].values())
    assert "preview.png" not in files
    assert sorted(page.locator("ul.downloads a").all_inner_texts()) == sorted([*files, "preview.png"])
    watched.shot("register")
    watched.assert_clean()



@pytest.fixture(scope="module")
def cine(tmp_path_factory) -> dict[str, Path]:
    """A phantom cine (6 frames of 2 slices, 64×64) as a 4-D NIfTI, and its first frame's mask."""
    import nibabel as nib

    from models.data.phantom_cine import make_phantom_cine

    phantom = make_phantom_cine(frames=6, slices=2, size=64, seed=1, noise=0.02)
    folder = tmp_path_factory.mktemp("cine")
    spacing = phantom.spacing_mm  # (z, y, x)
    affine = np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])  # LPS spacing, as a RAS affine
    nib.save(nib.Nifti1Image(np.transpose(phantom.images, (3, 2, 1, 0)).astype(np.float32), affine),
             str(folder / "cine.nii.gz"))
    return {"cine": folder / "cine.nii.gz",
            "reference_mask": _write(phantom.masks[0], folder / "ed.nii.gz", tuple(float(s) for s in spacing[::-1]))}


def test_track_a_cine_and_play_it(watched, server, cine):
    watched.open("cine")
    page = watched.page
    for role, path in cine.items():
        page.set_input_files(f"#cine-form input[name={role}]", str(path))
    page.fill("#cine-form input[name=refine_steps]", "0")
    page.fill("#cine-form input[name=labels]", LABELS)
    page.click("#cine-form button[type=submit]")
    page.wait_for_selector("#cine-viewer[data-ready=true]", timeout=120_000)
    job_id = page.get_attribute("#cine-result", "data-job")
    report = server.api.get(f"/v1/cine-registrations/{job_id}/report").json()
    drawn = watched.canvas("#cine-viewer canvas")
    assert drawn["lit"] > 0.3 and drawn["coloured"] > 50, drawn  # the frame, with the carried mask's outlines
    ef = page.locator("#cine-summary dd[data-value]")
    assert float(ef.get_attribute("data-value")) == report["lv"]["ef_pct"]
    assert int(page.get_attribute("#volume-chart", "data-points")) == 2 * report["frames"]  # LV and myocardium
    page.focus("#cine-viewer")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#cine-viewer", "data-frame") == "1"
    page.fill("#frame", str(report["lv"]["es_frame"]))
    assert page.get_attribute("#cine-viewer", "data-frame") == str(report["lv"]["es_frame"])
    systole = watched.canvas("#cine-viewer canvas")
    assert systole["hash"] != drawn["hash"], "another frame, the same picture"
    assert systole["coloured"] < drawn["coloured"], (systole, drawn)  # the carried outlines contract too
    page.click("#play")
    page.wait_for_function("(es) => document.querySelector('#cine-viewer').dataset.frame !== String(es)",
                           arg=report["lv"]["es_frame"], timeout=10_000)
    page.click("#play")  # pause
    watched.shot("cine")
    watched.assert_clean()


def test_train_watch_the_curves_and_cancel(watched, server, dataset_zip, tmp_path):
    archive = tmp_path / "study.zip"
    archive.write_bytes(dataset_zip)
    watched.open("training")
    page = watched.page
    page.set_input_files("#dataset-form input[name=file]", str(archive))
    page.click("#dataset-form button[type=submit]")
    page.wait_for_selector("#training-form select[name=dataset_id] option[value]:not([value=''])", state="attached")
    page.fill("#training-form input[name=model_name]", "browser")
    page.click("#training-form summary:has-text('hyperparameters')")
    # Long enough to be cancelled while it runs: 0 + 1000 epochs of 5 updates of 2 pairs of 32 px.
    for name, value in {"warmup_epochs": "0", "epochs": "1000", "steps_per_epoch": "5", "batch_size": "2",
                        "crop": ""}.items():
        page.fill(f"#training-form input[name='hyperparameters.{name}']", value)
    page.click("#training-form button[type=submit]")
    page.wait_for_function("() => Number(document.querySelector('#chart-losses').dataset.points || 0) >= 4",
                           timeout=180_000)  # the curves grow from the server-sent events
    job_id = page.url.rsplit("/", 1)[-1]
    job = server.api.get(f"/v1/training-jobs/{job_id}").json()
    assert job["status"] == "running" and job["hyperparameters"]["crop"] is None, job
    watched.shot("training")
    page.click("#cancel")
    page.wait_for_function("() => document.querySelector('#training-status')?.textContent.startsWith('cancelled')",
                           timeout=60_000)
    assert server.api.get(f"/v1/training-jobs/{job_id}").json()["status"] == "cancelled"
    watched.assert_clean()


def test_promote_a_model_version(watched, server):
    watched.open("models")
    page = watched.page
    page.wait_for_selector("[data-model=starter] tr[data-ref='starter:1']")
    page.fill("[data-model=starter] tr[data-ref='starter:1'] input[name=stage]", "staging")
    page.click("[data-model=starter] tr[data-ref='starter:1'] button")
    page.wait_for_selector("text=starter staging → version 1")
    assert server.api.get("/v1/models/starter").json()["stages"] == {"production": 1, "staging": 1}
    page.wait_for_selector("[data-model=starter] tr[data-ref='starter:1'] .stages .badge.staging")
    watched.shot("models")
    watched.assert_clean()


def test_jobs_lists_what_ran(watched, server):
    watched.open("jobs")
    page = watched.page
    page.wait_for_selector("text=Trainings (")
    for kind, path in (("register", "registrations"), ("cine", "cine-registrations"), ("training", "training-jobs")):
        listed = server.api.get(f"/v1/{path}").json()["data"]
        shown = page.eval_on_selector_all(f"table[data-kind={kind}] tbody tr",
                                          "rows => rows.map(r => [r.dataset.id, r.dataset.status])")
        assert shown == [[job["id"], job["status"]] for job in listed[:20]]
    watched.shot("jobs")
    # A registration opened from the list: its result on the warped image (the API serves no inputs back).
    page.click("table[data-kind=register] tbody tr:first-child a")
    page.wait_for_selector("#viewer[data-ready=true]", timeout=60_000)
    assert "warped moving image" in page.inner_text("#result")
    assert watched.canvas("#viewer canvas")["coloured"] > 50
    page.go_back()
    page.click("table[data-kind=training] tbody tr:first-child a")
    page.wait_for_function("() => document.querySelector('#training-status')?.textContent.startsWith('cancelled')")
    watched.assert_clean()


def test_without_webgl_a_registration_shows_the_service_preview(playwright, server, stack):
    """A browser without WebGL2 (a locked-down workstation) still sees the result: preview.png."""
    files = {role: (path.name, path.read_bytes()) for role, path in stack.items()}
    job = server.api.post("/v1/registrations?wait=60", files=files, data={"refine_steps": "0"}).json()
    assert job["status"] == "succeeded", job
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                          args=[*QUIET, "--disable-webgl", "--disable-3d-apis"])
    try:
        watched = Watched(chromium.new_context(viewport=VIEWPORT), server)
        watched.open(f"register/{job['id']}")
        watched.page.wait_for_selector("#viewer[data-ready=preview] img", timeout=60_000)
        assert "no WebGL2" in watched.page.inner_text("#result")
        assert watched.page.evaluate("document.querySelector('#viewer img').naturalWidth") > 100
        assert watched.page.locator("#dice td[data-kind=after]").count() == 2  # the report's tables still
        watched.assert_clean()
    finally:
        chromium.close()
