"""A small Python client for a running AdaCS server: models, registrations, datasets and trainings.

It speaks the HTTP API of ``service.api`` with httpx alone (no torch, no SimpleITK), so it runs on a
laptop beside a server elsewhere. Every non-2xx answer becomes one exception, :class:`AdacsApiError`,
carrying the server's stable ``code`` to branch on. Uploads stream from open file handles, so a large
volume is never held in memory. Downloads stream into a hidden file beside the destination that is
renamed only once complete (and checked against the server's sha256), so an interrupted download
never leaves a plausible-looking file behind.

Example::

    with AdacsClient("http://127.0.0.1:8000") as client:
        job = client.register("fixed.nii.gz", "moving.nii.gz", moving_mask="moving_mask.nii.gz")
        job = client.wait_registration(job["id"])
        client.download_all(job["id"], "out/")
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from models.io.archive import write_zip
from models.io.atomic import atomic_write

__all__ = ["AdacsClient", "AdacsApiError", "DownloadError", "parse_sse", "DEFAULT_SERVER", "DOWNLOADS", "FINISHED"]

DEFAULT_SERVER = "http://127.0.0.1:8000"
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
# A registration's outputs by URL segment; not imported from the server (its readers): a test keeps them equal.
DOWNLOADS = ("displacement", "inverse-displacement", "jacobian", "warped-image", "warped-mask",
             "warped-mask-seg", "report", "preview.png")
UPLOAD_READ_TIMEOUT_S = 600.0  # the server checks an uploaded dataset or model before it answers: minutes
_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-f]{64})"?$')
_FILENAME = re.compile(r'filename="([^"/\\]+)"')

Job = dict[str, Any]
OnProgress = Callable[[Job], None] | None
PathLike = str | os.PathLike[str]


class AdacsApiError(Exception):
    """A non-2xx answer: its HTTP ``status_code``, the server's stable ``code`` and its ``detail``."""

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(status_code, code, detail)
        self.status_code, self.code, self.detail = status_code, code, detail

    def __str__(self) -> str:
        return f"HTTP {self.status_code} {self.code}: {self.detail}"

    @classmethod
    def from_response(cls, response: httpx.Response) -> AdacsApiError:
        """From the API's ``{"detail", "code"}`` body. FastAPI's own 422 (a list of problems) and
        bodies of any other shape (a proxy's HTML page) still become a readable message."""
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, str):
            return cls(response.status_code, str(body.get("code") or "http_error"), detail)
        if isinstance(detail, list):  # request validation: [{"loc": [...], "msg": ...}, ...]
            problems = "; ".join(f"{'.'.join(map(str, p.get('loc', [])))}: {p.get('msg')}" for p in detail)
            return cls(response.status_code, "validation_error", problems)
        text = response.text.strip()[:500] or response.reason_phrase
        return cls(response.status_code, re.sub(r"\W+", "_", response.reason_phrase.lower()) or "http_error", text)


class DownloadError(OSError):
    """A download arrived whole but its sha256 differs from the one the server announced."""


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(event, data)`` for each event of a ``text/event-stream`` read line by line (line ends removed).

    Follows the WHATWG rules: a blank line ends an event, ``data`` lines join with ``\\n``, one space
    after the colon is dropped, lines starting with ``:`` are comments (keep-alives), an event without
    ``data`` is not dispatched, and ``event`` defaults to ``message``. An event cut off by the end of
    the stream is dropped: it may be incomplete. ``id`` and ``retry`` are ignored, because a client
    that reconnects reads the job's current state and needs no replay.
    """
    event, data = "", []
    for line in lines:
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)


def _segment(value: object) -> str:
    return quote(str(value), safe="")


def _upload(path: Path, files: ExitStack) -> tuple[str, BinaryIO]:
    """``(file name, open handle)`` for a multipart field; a folder (a DICOM series, a model artifact)
    is zipped first into a temporary file, since the server takes one file per field."""
    if not path.is_dir():
        return path.name, files.enter_context(open(path, "rb"))
    spool = files.enter_context(tempfile.TemporaryFile(suffix=".zip"))
    write_zip(spool, path)
    spool.seek(0)
    return f"{path.name}.zip", spool


def _save_atomically(chunks: Iterable[bytes], dest: Path, sha256: str | None) -> None:
    """Write ``chunks`` to a hidden file in ``dest``'s folder, then rename it to ``dest``.

    The rename is atomic within one file system, so readers see the old file or the whole new one;
    a sha256 that differs from the server's raises inside the block, so ``dest`` is left untouched.
    The file gets the permissions ``open`` would give it (``private=False``): it is the user's own.
    """
    digest = hashlib.sha256()
    with atomic_write(dest, "wb", private=False) as handle:
        for chunk in chunks:
            handle.write(chunk)
            digest.update(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise DownloadError(f"{dest.name}: the download's sha256 {digest.hexdigest()} differs from the "
                                f"server's {sha256}; download it again")


def _pause(deadline: float | None, seconds: float, waiting_for: str) -> None:
    """Sleep ``seconds``, or less if the deadline comes first; raise ``TimeoutError`` once it has passed."""
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"gave up waiting for {waiting_for}")
        seconds = min(seconds, left)
    time.sleep(seconds)


def _poll_once(read: Callable[[], Job], on_progress: OnProgress, deadline: float | None, poll_s: float,
               waiting_for: str, timeout: float | None) -> Job | None:
    """One poll of a job being waited for: read it and hand it to ``on_progress``; the job once it has
    finished, else None after a pause (``TimeoutError`` once ``deadline`` has passed)."""
    job = read()
    if on_progress is not None:
        on_progress(job)
    if job["status"] in FINISHED:
        return job
    _pause(deadline, poll_s, f"{waiting_for} (still {job['status']} after {timeout} s)")
    return None


class AdacsClient:
    """The AdaCS API over HTTP. ``api_key`` is sent as ``X-API-Key`` (needed when the server has keys on);
    ``timeout`` bounds connecting and each read or write, in seconds; ``stream_timeout_s`` is how long an
    event stream may stay silent before :meth:`wait_training` polls once and subscribes again."""

    def __init__(self, base_url: str = DEFAULT_SERVER, api_key: str | None = None, timeout: float = 30.0,
                 stream_timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout, self.stream_timeout_s = timeout, stream_timeout_s
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdacsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if not response.is_success:
            raise AdacsApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _upload_timeout(self, extra_s: float = UPLOAD_READ_TIMEOUT_S) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=max(self.timeout, extra_s))

    # -- probes and the model registry ---------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """``{"ready": bool, "checks": {...}}``. A 503 is returned, not raised: its checks say what failed."""
        response = self._http.get("/readyz")
        if response.status_code not in (200, 503):
            raise AdacsApiError.from_response(response)
        return response.json()

    def list_models(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return self._json("GET", "/v1/models", params={"offset": offset, "limit": limit})

    def get_model(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/models/{_segment(name)}")

    def upload_model(self, name: str, artifact: PathLike) -> dict[str, Any]:
        """Add a version to model ``name`` from an artifact zip (or folder, zipped on the way)."""
        with ExitStack() as files:
            return self._json("POST", "/v1/models", data={"name": name},
                              files={"file": _upload(Path(artifact), files)}, timeout=self._upload_timeout())

    def promote(self, name: str, version: int, stage: str = "production") -> dict[str, Any]:
        return self._json("POST", f"/v1/models/{_segment(name)}/versions/{int(version)}/promote",
                          json={"stage": stage})

    def download_model(self, name: str, version: int, dest: PathLike) -> Path:
        """The version's artifact as a zip at ``dest`` (a file, or a folder to put ``name-version.zip`` in)."""
        return self._download(f"/v1/models/{_segment(name)}/versions/{int(version)}/artifact", Path(dest))

    # -- registrations ---------------------------------------------------------------------------------

    def register(self, fixed: PathLike, moving: PathLike, moving_mask: PathLike | None = None,
                 fixed_mask: PathLike | None = None, *, model: str | None = None, wait: float = 0,
                 fixed_series: str | None = None, moving_series: str | None = None,
                 fixed_frame: int | None = None, moving_frame: int | None = None,
                 labels: dict[str, str] | None = None) -> Job:
        """Upload a pair (and masks) and queue its registration; the job as the server answers it.
        ``labels`` (``{"2": "myocardium"}``) name the mask's labels in the report.

        ``wait`` (at most 60 s) lets the server answer with the finished job when it ends that soon.
        A folder (a DICOM series) is zipped on the way.
        """
        form = {"model": model, "fixed_series": fixed_series, "moving_series": moving_series,
                "fixed_frame": fixed_frame, "moving_frame": moving_frame, "labels": labels and json.dumps(labels)}
        roles = {"fixed": fixed, "moving": moving, "moving_mask": moving_mask, "fixed_mask": fixed_mask}
        with ExitStack() as files:
            parts = {role: _upload(Path(path), files) for role, path in roles.items() if path is not None}
            return self._json("POST", "/v1/registrations", params={"wait": wait} if wait else None,
                              data={k: str(v) for k, v in form.items() if v is not None}, files=parts,
                              timeout=self._upload_timeout(self.timeout + wait))

    def list_registrations(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return self._json("GET", "/v1/registrations", params={"offset": offset, "limit": limit})

    def get_registration(self, job_id: str) -> Job:
        return self._json("GET", f"/v1/registrations/{_segment(job_id)}")

    def delete_registration(self, job_id: str) -> None:
        self._request("DELETE", f"/v1/registrations/{_segment(job_id)}")

    def wait_registration(self, job_id: str, timeout: float | None = None, poll_s: float = 0.5,
                          on_progress: OnProgress = None) -> Job:
        """The job once finished; ``on_progress`` gets every read; ``TimeoutError`` after ``timeout`` seconds
        (None: never). A succeeded job's preview.png is drawn when first downloaded: not listed until then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (job := _poll_once(lambda: self.get_registration(job_id), on_progress, deadline, poll_s,
                                 f"registration {job_id}", timeout)) is None:
            pass
        return job

    def download(self, job_id: str, what: str, dest: PathLike) -> Path:
        """One output (``what`` in :data:`DOWNLOADS`) to ``dest``, a file or an existing folder (then the
        server's file name, e.g. ``warped_mask.nii.gz``). Checked against the server's sha256 (ETag)."""
        if what not in DOWNLOADS:
            raise ValueError(f"unknown output {what!r}; expected one of {', '.join(DOWNLOADS)}")
        return self._download(f"/v1/registrations/{_segment(job_id)}/{what}", Path(dest), verify_etag=True)

    def download_all(self, job_id: str, out_dir: PathLike) -> dict[str, Path]:
        """Every output the finished job lists, and its preview.png (drawn on this request if it was not yet),
        into ``out_dir`` under the server's file names; by role."""
        job = self.get_registration(job_id)
        if job["status"] != "succeeded":
            # Let the server say why there is nothing: 409 while it runs, 404 naming the failure.
            self._request("GET", f"/v1/registrations/{_segment(job_id)}/report")
        out = Path(out_dir)
        paths = {}
        for role, entry in job["outputs"].items():
            what = entry["url"].rsplit("/", 1)[1]
            name = Path(entry["file"]).name  # a bare name, whatever the answer says: never outside out_dir
            paths[role] = self._download(f"/v1/registrations/{_segment(job_id)}/{what}", out / name,
                                         sha256=entry["sha256"])
        if "preview" not in paths:
            paths["preview"] = self.download(job_id, "preview.png", out / "preview.png")
        return paths

    def _download(self, path: str, dest: Path, sha256: str | None = None, verify_etag: bool = False) -> Path:
        with self._http.stream("GET", path) as response:
            if not response.is_success:
                response.read()
                raise AdacsApiError.from_response(response)
            if dest.is_dir():
                named = _FILENAME.search(response.headers.get("content-disposition", ""))
                dest = dest / (named.group(1) if named else path.rsplit("/", 1)[1])
            etag = _SHA256.match(response.headers.get("etag", "")) if verify_etag else None
            _save_atomically(response.iter_bytes(), dest, sha256 or (etag.group(1) if etag else None))
        return dest

    # -- datasets ----------------------------------------------------------------------------------------

    def upload_dataset(self, zip_path: PathLike, name: str | None = None, layout: str | None = None) -> dict[str, Any]:
        """Upload a dataset zip; ``layout`` is ``acdc``, ``camus`` or ``manifest`` (None: detected)."""
        form = {k: v for k, v in (("name", name), ("layout", layout)) if v is not None}
        with ExitStack() as files:
            return self._json("POST", "/v1/datasets", data=form, files={"file": _upload(Path(zip_path), files)},
                              timeout=self._upload_timeout())

    def list_datasets(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return self._json("GET", "/v1/datasets", params={"offset": offset, "limit": limit})

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{_segment(dataset_id)}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{_segment(dataset_id)}")

    # -- training jobs -----------------------------------------------------------------------------------

    def train(self, dataset_id: str, model_name: str, architecture: str | None = None, method: str | None = None,
              hyperparameters: dict[str, Any] | None = None, val_fraction: float | None = None,
              architecture_options: dict[str, Any] | None = None, devices: int | None = None) -> Job:
        """Queue a training of ``model_name`` on a dataset; hyperparameters left out take the server's defaults
        (``devices``: processes, one per GPU of the worker's machine; default 1)."""
        body: dict[str, Any] = {"dataset_id": dataset_id, "model_name": model_name}
        optional = {"architecture": architecture, "method": method, "val_fraction": val_fraction, "devices": devices}
        body |= {key: value for key, value in optional.items() if value is not None}
        if architecture_options:
            body["architecture_options"] = architecture_options
        if hyperparameters:
            body["hyperparameters"] = hyperparameters
        return self._json("POST", "/v1/training-jobs", json=body)

    def list_training_jobs(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return self._json("GET", "/v1/training-jobs", params={"offset": offset, "limit": limit})

    def get_training_job(self, job_id: str) -> Job:
        return self._json("GET", f"/v1/training-jobs/{_segment(job_id)}")

    def cancel_training_job(self, job_id: str) -> Job:
        return self._json("POST", f"/v1/training-jobs/{_segment(job_id)}/cancel")

    def training_events(self, job_id: str, silence_s: float | None = None) -> Iterator[tuple[str, Job]]:
        """``(event, job)`` from the job's event stream: ``progress`` on each change, then ``end``.

        Raises ``httpx.ReadTimeout`` when the stream stays silent for ``silence_s`` (default
        ``stream_timeout_s``), and ``AdacsApiError`` when the server refuses the stream.
        """
        timeout = httpx.Timeout(self.timeout, read=silence_s or self.stream_timeout_s)
        with self._http.stream("GET", f"/v1/training-jobs/{_segment(job_id)}/events", timeout=timeout,
                               headers={"Accept": "text/event-stream"}) as response:
            if not response.is_success:
                response.read()
                raise AdacsApiError.from_response(response)
            for event, data in parse_sse(response.iter_lines()):
                yield event, json.loads(data)

    def wait_training(self, job_id: str, timeout: float | None = None, on_progress: OnProgress = None,
                      poll_s: float = 2.0) -> Job:
        """Follow the job's event stream until it has finished and return the final job.

        When the stream drops or stays silent, the job is read once and the stream subscribed again;
        when the server refuses the stream (an older server without it), the job is polled instead.
        Raises ``TimeoutError`` after ``timeout`` seconds (None: never), ``AdacsApiError`` for an
        unknown job.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        streaming = True
        while True:
            if streaming:
                silence = self.stream_timeout_s if deadline is None else max(0.1, deadline - time.monotonic())
                try:
                    for event, job in self.training_events(job_id, min(silence, self.stream_timeout_s)):
                        if on_progress is not None:
                            on_progress(job)
                        if event == "end" or job.get("status") in FINISHED:
                            return job
                        if deadline is not None and time.monotonic() > deadline:
                            raise TimeoutError(f"gave up waiting for training job {job_id} (still "
                                               f"{job.get('status')} after {timeout} s)")
                except AdacsApiError:
                    streaming = False  # the read below raises the same error if the job itself is unknown
                except httpx.TransportError:
                    pass  # dropped or silent: read the job, then subscribe again
            job = _poll_once(lambda: self.get_training_job(job_id), on_progress, deadline, poll_s,
                             f"training job {job_id}", timeout)
            if job is not None:
                return job
