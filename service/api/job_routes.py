"""What the routes of every file-making job kind share: find a key's job, queue it, wait, serve its files.

A pair registration and a cine registration differ in their uploads and outputs, not in how a job
is found (another key's job is a 404, exactly like a missing one), sent (a broker that refuses
takes the job back, row and files, and answers 503), waited for (``?wait``) or downloaded (410
once expired, 409 while running, 404 naming why an output is absent). :class:`JobFiles` holds
those rules once, for one job kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.access import Principal, may_see, owned_by
from service.api.deps import CurrentPrincipal, SessionDep, StoreDep
from service.api.errors import ApiError
from service.api.params import is_uuid
from service.db import Job, JobKind, JobStatus
from service.jobs.registration import OutputFile, RegistrationResult
from service.jobs.tasks import TaskSender
from service.storage import ArtifactStore
from service.storage.atomic import CHUNK

__all__ = ["JobFiles", "BrokerUnavailable", "POLL_S", "FAST_POLL_S", "FAST_POLL_FOR_S", "ON_DEMAND_WAIT_S"]

POLL_S = 0.1
FAST_POLL_S = 0.01
FAST_POLL_FOR_S = 2.0
ON_DEMAND_WAIT_S = 30.0  # a download of an output made on demand waits this long for a worker to make it


class BrokerUnavailable(ApiError):
    def __init__(self, error: Exception) -> None:
        super().__init__(503, f"the job could not be queued, the broker is unreachable ({type(error).__name__}: "
                              f"{error}); nothing was kept, try again later", "broker_unavailable")


def _schema(media_type: str) -> dict[str, str]:
    """report.json is a JSON object; every other output is a file (NIfTI, DICOM, PNG, CSV) served as bytes."""
    return {"type": "object"} if media_type == "application/json" else {"type": "string", "format": "binary"}


def _chunks(store: ArtifactStore, sha: str) -> Iterator[bytes]:
    with store.open(sha) as source:
        while chunk := source.read(CHUNK):
            yield chunk


class JobFiles:
    """Finding, queueing and serving the jobs of one ``kind``, named ``noun`` in messages.

    ``downloads`` maps a URL segment to ``(output role, media type, file name)``; ``absent`` says
    why an optional output may be missing (appended to the 404); ``operation`` prefixes the
    download routes' operation ids (``download_displacement``: clients generated from the schema
    call them by these names). ``on_demand`` names the outputs a worker makes only when first asked
    for (a registration's preview): the download sends the task and waits up to :data:`ON_DEMAND_WAIT_S`.
    """

    def __init__(self, kind: JobKind, noun: str, list_url: str, downloads: Mapping[str, tuple[str, str, str]],
                 absent: Mapping[str, str] | None = None, operation: str = "download_",
                 on_demand: Mapping[str, Callable[[TaskSender, str], None]] | None = None) -> None:
        self.kind, self.noun, self.list_url, self.operation = kind, noun, list_url, operation
        self.downloads, self.absent = dict(downloads), dict(absent or {})
        self.on_demand = dict(on_demand or {})
        self.segment_of = {role: segment for segment, (role, _, _) in self.downloads.items()}

    def not_found(self, job_id: str) -> ApiError:
        return ApiError(404, f"no {self.noun} with id {job_id!r}; list them with GET {self.list_url}", "not_found")

    def load(self, session: Session, job_id: str, principal: Principal) -> Job:
        """The job, if it is of this kind and ``principal`` may see it; else a 404."""
        job = session.get(Job, job_id) if is_uuid(job_id) else None
        if job is None or job.kind != self.kind or not may_see(principal, job.owner_key_id):
            raise self.not_found(job_id)
        return job

    def send(self, session: Session, store: ArtifactStore, tasks: TaskSender, job: Job) -> None:
        """Send the task; if the broker refuses, take the job back (row and files) and answer 503."""
        try:
            tasks.send(self.kind, job.id)
        except Exception as error:
            session.delete(job)
            session.commit()
            store.remove_job_dir(job.id)
            raise BrokerUnavailable(error) from error

    def dispatch(self, session: Session, store: ArtifactStore, tasks: TaskSender, job: Job, wait_s: float,
                 response: Response) -> None:
        """After the row is committed: send the task, wait up to ``wait_s``, then answer 200 with the
        finished job or leave the 202 with a ``Location`` to follow."""
        self.send(session, store, tasks, job)
        self.wait(session, job, wait_s)
        if job.status.finished:
            response.status_code = 200
        else:
            response.headers["Location"] = f"{self.list_url}/{job.id}"

    def page(self, session: Session, principal: Principal, offset: int, limit: int) -> tuple[list[Job], int]:
        """The jobs of this kind ``principal`` may see, newest first, and how many there are in all."""
        where = (Job.kind == self.kind) & owned_by(principal, Job.owner_key_id)
        jobs = session.scalars(select(Job).where(where).order_by(Job.created_at.desc(), Job.id.desc())
                               .offset(offset).limit(limit))
        return list(jobs), session.scalar(select(func.count(Job.id)).where(where)) or 0

    def wait(self, session: Session, job: Job, seconds: float) -> None:
        """Re-read the row until the job finished or ``seconds`` passed (:meth:`poll`)."""
        self.poll(session, job, seconds, lambda row: row.status.finished)

    def poll(self, session: Session, job: Job, seconds: float, until: Callable[[Job], bool]) -> bool:
        """Re-read ``job``'s row (a fresh read each time) until ``until(job)`` or ``seconds`` passed; whether
        it held. A job deleted meanwhile (its owner may delete a queued or finished one) is a 404.

        Every :data:`FAST_POLL_S` for the first :data:`FAST_POLL_FOR_S` (a 2D job ends within a few
        hundred ms, and is answered within 10 ms of its end instead of up to 100 ms), then every
        :data:`POLL_S` for a long one. A primary-key read costs about 0.2 ms on SQLite and PostgreSQL
        here: 100 a second for two seconds is cheap next to the job itself.
        """
        job_id = job.id
        start = time.monotonic()
        deadline = start + seconds
        while not until(job):
            if time.monotonic() >= deadline:
                return False
            interval = FAST_POLL_S if time.monotonic() - start < FAST_POLL_FOR_S else POLL_S
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            session.commit()  # end the read transaction, so the next read sees the worker's commits
            if session.get(Job, job_id, populate_existing=True) is None:  # the same object, re-read
                raise self.not_found(job_id)
        return True

    def output_links(self, job: Job, base: str) -> dict[str, dict[str, Any]]:
        """Each output of a succeeded job: file, URL, sha256, size."""
        if job.status != JobStatus.SUCCEEDED:
            return {}
        outputs = RegistrationResult.read(job.result).outputs
        return {role: {"file": entry.file, "url": f"{base}/{self.segment_of[role]}", "sha256": entry.sha256,
                       "size_bytes": entry.size_bytes} for role, entry in outputs.items() if role in self.segment_of}

    def output(self, session: Session, job_id: str, segment: str, principal: Principal,
               tasks: TaskSender | None = None) -> OutputFile:
        """The stored output behind ``segment``, or the 404/409/410 that says why there is none.

        An ``on_demand`` output not made yet is asked of a worker through ``tasks``, then waited for.
        """
        role, _, file = self.downloads[segment]
        job = self.load(session, job_id, principal)
        what = f"{self.noun} {job_id}"
        if job.expired_at is not None:
            raise ApiError(410, f"{what} expired at {job.expired_at:%Y-%m-%d %H:%M} UTC: its files were removed "
                                "after the retention period (ADACS_JOB_RETENTION_DAYS)", "expired")
        if not job.status.finished:
            raise ApiError(409, f"{what} is still {job.status.value}; {file} is there once it has succeeded",
                           "job_not_finished")
        if job.status != JobStatus.SUCCEEDED:
            raise ApiError(404, f"{what} {job.status.value} ({job.error or 'no error recorded'}), so it has no "
                                f"{file}", "no_output")
        entry = RegistrationResult.read(job.result).outputs.get(role)
        if entry is None and role in self.on_demand and tasks is not None:
            entry = self._made_on_demand(session, job, role, tasks)
        if entry is None:
            raise ApiError(404, f"{what} has no {file}{self.absent.get(role, '')}", "no_output")
        return entry

    def _made_on_demand(self, session: Session, job: Job, role: str, tasks: TaskSender) -> OutputFile:
        """Ask a worker for output ``role`` of ``job`` and wait for it; a 404 ``not_ready`` (with
        ``Retry-After``) if it is not there in time, e.g. behind a queue of registrations."""
        try:
            self.on_demand[role](tasks, job.id)
        except Exception as error:
            raise BrokerUnavailable(error) from error
        def settled(row: Job) -> bool:  # made, or never will be: failed, deleted or expired meanwhile
            return row.status != JobStatus.SUCCEEDED or row.expired_at is not None or \
                role in RegistrationResult.read(row.result).outputs

        if self.poll(session, job, ON_DEMAND_WAIT_S, settled):
            return RegistrationResult.read(job.result).outputs.get(role) if job.status == JobStatus.SUCCEEDED \
                else None
        file = next(name for segment_role, _, name in self.downloads.values() if segment_role == role)
        raise ApiError(404, f"{self.noun} {job.id}: {file} is being drawn (it is made when first asked for) and "
                            f"was not ready within {ON_DEMAND_WAIT_S:.0f} s; try again shortly", "not_ready",
                       headers={"Retry-After": "5"})

    def add_download_routes(self, router: APIRouter, job_id_type: Any) -> None:
        """``GET {job_id}/{segment}`` for every download, streamed from the store with its sha256 as ETag."""
        for segment in self.downloads:
            self._download_route(router, segment, job_id_type)

    def _download_route(self, router: APIRouter, segment: str, job_id_type: Any) -> None:
        role, media_type, file = self.downloads[segment]
        files = self

        def download(job_id: str, request: Request, session: SessionDep, store: StoreDep,
                     principal: CurrentPrincipal) -> StreamingResponse:
            entry = files.output(session, job_id, segment, principal, getattr(request.state, "tasks", None))
            stream = _chunks(store, entry.sha256)
            first = next(stream, b"")  # opens the object now: a missing one is an error answer, not a cut stream
            headers = {"Content-Disposition": f'attachment; filename="{file}"', "ETag": f'"{entry.sha256}"',
                       "Content-Length": str(entry.size_bytes)}

            def body() -> Iterator[bytes]:
                if first:
                    yield first
                yield from stream

            return StreamingResponse(body(), media_type=media_type, headers=headers)

        download.__annotations__["job_id"] = job_id_type  # the kind's bounded path parameter, as an object
        stem = segment.rsplit(".", 1)[0] if segment.endswith((".png", ".csv")) else segment
        download.__name__ = (self.operation + stem).replace("-", "_")  # the operation id
        router.add_api_route(f"/{{job_id}}/{segment}", download, methods=["GET"], response_class=StreamingResponse,
                             summary=f"Download {file}",
                             responses={200: {"content": {media_type: {"schema": _schema(media_type)}},
                                              "description": file}})

