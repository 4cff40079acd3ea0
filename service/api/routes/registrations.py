"""Registrations over HTTP: upload an image pair, follow the job, download its outputs.

``POST /v1/registrations`` keeps the contract of ``worker.tasks.registration`` (its docstring): the
uploads go to ``store.job_dir(id)/inputs/<role><ext>``, each is checked from its header and then read
whole by the worker's own function (``models.io.readers.read_registration_inputs``, no torch), and only
then is the ``queued`` row committed and
``adacs.registration.run`` sent by name with the job's id. A refused upload leaves no row and no
files; an image error names the form field (``moving: ...``). Creating and deleting need the
``register`` scope; reading needs a valid key when keys are on. A key sees only its own
registrations (an ``admin`` key sees all): another key's is a 404, exactly like a missing one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.io.errors import DimensionMismatchError, ImageError
from models.io.readers import check_header, read_header, read_registration_inputs
from models.io.readers.inputs import FRAME_ROLES
from models.report import parse_label_names
from service.access import Principal, may_see, owned_by
from service.api.deps import CurrentPrincipal, RegisterPrincipal, SessionDep, SettingsDep, StoreDep
from service.api.errors import ApiError
from service.api.forms import refuse_unknown_form_fields
from service.api.params import Limit, Offset, is_uuid, uuid_path
from service.api.routes import API_V1, error_responses
from service.api.schemas import ErrorPublic, OutputPublic, RegistrationPublic, RegistrationsPublic
from service.api.staging import all_or_nothing, save_upload
from service.core.config import Settings
from service.db import Job, JobKind, JobStatus, new_id
from service.jobs.registration import OutputFile, RegistrationParams, RegistrationResult
from service.jobs.tasks import TaskSender
from service.registry import resolve
from service.retention import remove_job_files
from service.storage import ArtifactStore
from service.storage.atomic import CHUNK

__all__ = ["router", "DOWNLOADS"]

_ERRORS = error_responses(410, 415)
router = APIRouter(prefix=f"{API_V1}/registrations", tags=["registrations"], responses=_ERRORS,
                   dependencies=[Depends(refuse_unknown_form_fields)])

JobId = Annotated[str, uuid_path("registration")]
IMAGE_ROLES = ("fixed", "moving")
MASK_ROLES = ("moving_mask", "fixed_mask")
# URL segment -> (output role in job.result, media type, file name), as the worker names them.
DOWNLOADS = {
    "displacement": ("displacement", "application/gzip", "displacement.nii.gz"),
    "inverse-displacement": ("inverse_displacement", "application/gzip", "inverse_displacement.nii.gz"),
    "jacobian": ("jacobian", "application/gzip", "jacobian.nii.gz"),
    "warped-image": ("warped", "application/gzip", "warped.nii.gz"),
    "warped-mask": ("warped_mask", "application/gzip", "warped_mask.nii.gz"),
    "warped-mask-seg": ("warped_mask_seg", "application/dicom", "warped_mask_seg.dcm"),
    "report": ("report", "application/json", "report.json"),
    "preview.png": ("preview", "image/png", "preview.png"),
}
_ROLE_SEGMENT = {role: segment for segment, (role, _, _) in DOWNLOADS.items()}
# Why an optional output is absent, as the 404 says it.
_ABSENT = {"warped_mask": " (no moving_mask was uploaded)",
           "warped_mask_seg": " (a DICOM SEG is made only for a DICOM fixed image with a moving_mask; when the "
                              "fixed series could not carry one, the report's dicom_seg says why)"}
_EXT = re.compile(r"^\.[a-z0-9]{1,8}$")
MAX_WAIT_S = 60.0
SERIES_PATTERN = r"^[0-9.]*$"  # a DICOM UID (digits and dots), or its prefix
MAX_FRAME = 100_000
MAX_REFINE_STEPS = 2000  # test-time refinement: a bound on a job's cost (about 0.004 s a step per 2D slice on CPU)
MAX_REFINE_TIME_S = 300.0
MAX_LABELS_FIELD = 20_000  # bytes of the labels JSON: 255 names of 64 characters, quoted
POLL_S = 0.1


class JobNotFound(ApiError):
    def __init__(self, job_id: str) -> None:
        super().__init__(404, f"no registration with id {job_id!r}; list them with GET {API_V1}/registrations",
                         "not_found")


class BrokerUnavailable(ApiError):
    def __init__(self, error: Exception) -> None:
        super().__init__(503, f"the job could not be queued, the broker is unreachable ({type(error).__name__}: "
                              f"{error}); nothing was kept, try again later", "broker_unavailable")


def extension(filename: str | None) -> str:
    """The upload's extension, kept so the readers' name fallback still works: '.nii.gz', '.zip', ''."""
    suffixes = [s.lower() for s in Path(filename or "").suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == ".gz" and _EXT.match(suffixes[-2]):
        return suffixes[-2] + suffixes[-1]
    return suffixes[-1] if suffixes and _EXT.match(suffixes[-1]) else ""


def _named(error: ImageError, fields: dict[str, Path]) -> ImageError:
    """The same error with every stored path replaced by its form field, e.g. ``moving: ...``.

    The server's folders stay private and the user reads the names they sent. Longer paths go first,
    so an upload stored without an extension (``inputs/moving``) cannot eat ``inputs/moving_mask``.
    """
    problem, path = error.problem, error.path
    for field, stored in sorted(fields.items(), key=lambda item: -len(str(item[1]))):
        problem = problem.replace(str(stored), field)
        path = path.replace(str(stored), field) if path else path
    rebuilt = type(error)(problem, path=path, hint=error.hint, **error.details)
    rebuilt.__cause__ = error
    return rebuilt


def _check_headers(inputs: dict[str, Path], series: dict[str, str | None], frames: dict[str, int | None],
                   settings: Settings) -> None:
    """Refuse what the headers alone show (size, frames, 2-D/3-D), before any voxel of any upload is read."""
    dims: dict[str, int | None] = {}
    for role, path in inputs.items():
        header = read_header(path, series=series.get(role))
        check_header(header, frame=frames.get(role), frame_name=f"{role}_frame" if role in FRAME_ROLES else None,
                     max_voxels=settings.max_voxels)
        dims[role] = header.image_ndim
    if dims["fixed"] != dims["moving"]:
        raise DimensionMismatchError(f"the fixed image is {dims['fixed']}-D but the moving image is "
                                     f"{dims['moving']}-D", path="moving")
    for mask, image in (("moving_mask", "moving"), ("fixed_mask", "fixed")):
        if mask in dims and dims[mask] != dims[image]:
            raise DimensionMismatchError(f"the mask is {dims[mask]}-D but its image ({image}) is {dims[image]}-D",
                                         path=mask, hint="upload the mask that was drawn on this image")


def _check_inputs(inputs: dict[str, Path], series: dict[str, str | None], frames: dict[str, int | None],
                  settings: Settings) -> None:
    """Refuse now everything the worker would refuse, so a bad upload never becomes a job.

    The headers first (cheap: an oversize image is refused before any pixel is read), then every voxel
    with the worker's own function (a cut ``.nii.gz``, NaN/Inf or out-of-range voxels, a constant image,
    a mask off its image's grid or with fractional labels). Raises ``ImageError`` naming the form field.
    """
    try:
        _check_headers(inputs, series, frames, settings)
        read_registration_inputs(inputs, series=series, frames=frames, max_voxels=settings.max_voxels)
    except ImageError as error:
        raise _named(error, inputs) from error


def _label_names(labels: str | None) -> dict[str, str] | None:
    """The ``labels`` form field, checked now (a 422 naming it), so a bad one never becomes a job."""
    if not labels:
        return None
    try:
        return parse_label_names(labels)
    except ValueError as error:
        raise ApiError(422, f"labels: {error}", "invalid_labels") from None


def _load(session: Session, job_id: str, principal: Principal) -> Job:
    job = session.get(Job, job_id) if is_uuid(job_id) else None
    if job is None or job.kind != JobKind.REGISTRATION or not may_see(principal, job.owner_key_id):
        raise JobNotFound(job_id)
    return job


def _public(job: Job, request: Request) -> RegistrationPublic:
    params, result = RegistrationParams.parse(job.params), RegistrationResult.read(job.result)
    base = f"{API_V1}/registrations/{job.id}"
    outputs = {}
    if job.status == JobStatus.SUCCEEDED:
        for role, entry in result.outputs.items():
            if role in _ROLE_SEGMENT:
                outputs[role] = OutputPublic(file=entry.file, url=f"{base}/{_ROLE_SEGMENT[role]}",
                                             sha256=entry.sha256, size_bytes=entry.size_bytes)
    return RegistrationPublic(
        id=job.id, status=job.status.value, model=params.model or "",
        model_version=result.model.ref if result.model else None,
        inputs=sorted(params.inputs, key=(IMAGE_ROLES + MASK_ROLES).index),
        progress=job.progress or {}, error=job.error, attempts=job.attempts, created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at, timings_s=result.timings_s,
        report=result.report, expired_at=job.expired_at, url=base, outputs=outputs)


def _wait(session: Session, job: Job, seconds: float) -> None:
    """Poll the row (a fresh read each time) until the job finished or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while not job.status.finished and time.monotonic() < deadline:
        time.sleep(POLL_S)
        session.commit()  # end the read transaction, so the next read sees the worker's commits
        session.refresh(job)


@router.post("", status_code=status.HTTP_202_ACCEPTED, summary="Upload an image pair and queue its registration",
             responses={200: {"model": RegistrationPublic, "description": "finished within `wait` seconds"},
                        202: {"description": "queued; follow the Location header"},
                        400: {"model": ErrorPublic, "description": "a corrupt or unsafe file"},
                        503: {"model": ErrorPublic, "description": "the broker is unreachable"}})
def create_registration(
    request: Request, response: Response, session: SessionDep, store: StoreDep, settings: SettingsDep,
    principal: RegisterPrincipal,
    fixed: Annotated[UploadFile, File(description="fixed image: NIfTI, DICOM (file or series zip), MetaImage, "
                                                  "NRRD")],
    moving: Annotated[UploadFile, File(description="moving image, warped onto the fixed one")],
    moving_mask: Annotated[UploadFile | None, File(description="label map on the moving image")] = None,
    fixed_mask: Annotated[UploadFile | None, File(description="label map on the fixed image (Dice)")] = None,
    model: Annotated[str | None, Form(description="'name', 'name:3' or 'name@stage'; default: "
                                                  "ADACS_DEFAULT_MODEL")] = None,
    fixed_series: Annotated[str | None, Form(max_length=64, pattern=SERIES_PATTERN,
                                             description="DICOM SeriesInstanceUID (or prefix)")] = None,
    moving_series: Annotated[str | None, Form(max_length=64, pattern=SERIES_PATTERN,
                                              description="DICOM SeriesInstanceUID (or prefix)")] = None,
    fixed_frame: Annotated[int | None, Form(ge=0, le=MAX_FRAME, description="frame of a 4-D fixed image")] = None,
    moving_frame: Annotated[int | None, Form(ge=0, le=MAX_FRAME, description="frame of a 4-D moving image")] = None,
    refine_steps: Annotated[int | None, Form(ge=0, le=MAX_REFINE_STEPS, description=(
        "test-time refinement: Adam steps on this pair's image term + smoothness after the network's forward "
        "pass, never worse by the image term than the network (0: the network's answer); default: the model "
        "card's, else 0; the report's `refine` records what was done"))] = None,
    refine_time_limit_s: Annotated[float | None, Form(gt=0, le=MAX_REFINE_TIME_S, allow_inf_nan=False, description=(
        "stop refining after this many seconds; default: the model card's, else 30"))] = None,
    labels: Annotated[str | None, Form(max_length=MAX_LABELS_FIELD, description=(
        'names of the mask\'s labels in the report, a JSON object: {"1": "RV", "2": "myocardium", "3": "LV"}; '
        "default: the model card's, else 'label k'"))] = None,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for the result "
                                                                  "(small 2-D jobs)")] = 0,
) -> RegistrationPublic:
    label_names = _label_names(labels)
    ref = model or settings.default_model
    resolve(session, ref, viewer=principal)  # an unknown (or another key's) model is a 404 now, not a failed job
    uploads = {"fixed": fixed, "moving": moving, "moving_mask": moving_mask, "fixed_mask": fixed_mask}
    uploads = {role: upload for role, upload in uploads.items() if upload is not None}
    series = {"fixed": fixed_series or None, "moving": moving_series or None}
    frames = {"fixed": fixed_frame, "moving": moving_frame}
    job_id = new_id()
    with all_or_nothing(session, store.job_dir(job_id)) as folder:
        (folder / "inputs").mkdir()
        inputs = {}
        for role, upload in uploads.items():
            inputs[role] = folder / "inputs" / f"{role}{extension(upload.filename)}"
            save_upload(upload, inputs[role], settings.max_upload_bytes)
        _check_inputs(inputs, series, frames, settings)
        params = RegistrationParams(model=ref, inputs={r: f"inputs/{p.name}" for r, p in inputs.items()},
                                    fixed_series=series["fixed"], moving_series=series["moving"],
                                    fixed_frame=frames["fixed"], moving_frame=frames["moving"],
                                    refine_steps=refine_steps, refine_time_limit_s=refine_time_limit_s,
                                    label_names=label_names)
        job = Job(id=job_id, kind=JobKind.REGISTRATION, status=JobStatus.QUEUED, owner_key_id=principal.key_id,
                  params=params.to_row())
        session.add(job)
        session.commit()
    _send(session, store, request.state.tasks, job)
    _wait(session, job, wait)
    if job.status.finished:
        response.status_code = status.HTTP_200_OK
    else:
        response.headers["Location"] = f"{API_V1}/registrations/{job.id}"
    return _public(job, request)


def _send(session: Session, store: ArtifactStore, tasks: TaskSender, job: Job) -> None:
    """Send the task; if the broker refuses, take the job back (row and files) and answer 503."""
    try:
        tasks.send(JobKind.REGISTRATION, job.id)
    except Exception as error:
        session.delete(job)
        session.commit()
        store.remove_job_dir(job.id)
        raise BrokerUnavailable(error) from error


@router.get("", summary="List registrations, newest first")
def list_registrations(request: Request, session: SessionDep, principal: CurrentPrincipal, offset: Offset = 0,
                       limit: Limit = 100) -> RegistrationsPublic:
    where = (Job.kind == JobKind.REGISTRATION) & owned_by(principal, Job.owner_key_id)
    jobs = session.scalars(select(Job).where(where).order_by(Job.created_at.desc(), Job.id.desc())
                           .offset(offset).limit(limit))
    count = session.scalar(select(func.count(Job.id)).where(where)) or 0
    return RegistrationsPublic(data=[_public(job, request) for job in jobs], count=count)


@router.get("/{job_id}", summary="One registration: status, progress, error, timings and output links")
def read_registration(job_id: JobId, request: Request, session: SessionDep,
                      principal: CurrentPrincipal) -> RegistrationPublic:
    return _public(_load(session, job_id, principal), request)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a registration and its files (refused while it runs)")
def delete_registration(job_id: JobId, session: SessionDep, store: StoreDep,
                        principal: RegisterPrincipal) -> Response:
    job = _load(session, job_id, principal)
    if job.status == JobStatus.RUNNING:
        raise ApiError(409, f"registration {job_id} is running; delete it once it has finished", "job_running")
    remove_job_files(session, store, job)  # its folder, and the outputs no other job or model shares, on commit
    session.delete(job)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _chunks(store: ArtifactStore, sha: str) -> Iterator[bytes]:
    with store.open(sha) as source:
        while chunk := source.read(CHUNK):
            yield chunk


def _output(session: Session, job_id: str, segment: str, principal: Principal) -> OutputFile:
    role, _, file = DOWNLOADS[segment]
    job = _load(session, job_id, principal)
    if job.expired_at is not None:
        raise ApiError(410, f"registration {job_id} expired at {job.expired_at:%Y-%m-%d %H:%M} UTC: its files were "
                            "removed after the retention period (ADACS_JOB_RETENTION_DAYS)", "expired")
    if not job.status.finished:
        raise ApiError(409, f"registration {job_id} is still {job.status.value}; {file} is there once it has "
                            "succeeded", "job_not_finished")
    if job.status != JobStatus.SUCCEEDED:
        raise ApiError(404, f"registration {job_id} {job.status.value} ({job.error or 'no error recorded'}), so it "
                            f"has no {file}", "no_output")
    entry = RegistrationResult.read(job.result).outputs.get(role)
    if entry is None:
        raise ApiError(404, f"registration {job_id} has no {file}{_ABSENT.get(role, '')}", "no_output")
    return entry


def _schema(media_type: str) -> dict[str, str]:
    """report.json is a JSON object; every other output is a file (NIfTI, DICOM, PNG) served as bytes."""
    return {"type": "object"} if media_type == "application/json" else {"type": "string", "format": "binary"}


def _download_route(segment: str):
    role, media_type, file = DOWNLOADS[segment]

    def download(job_id: JobId, session: SessionDep, store: StoreDep,
                 principal: CurrentPrincipal) -> StreamingResponse:
        entry = _output(session, job_id, segment, principal)
        stream = _chunks(store, entry.sha256)
        next_chunk = next(stream, b"")  # opens the object now: a missing one is an error answer, not a cut stream
        headers = {"Content-Disposition": f'attachment; filename="{file}"', "ETag": f'"{entry.sha256}"',
                   "Content-Length": str(entry.size_bytes)}

        def body() -> Iterator[bytes]:
            if next_chunk:
                yield next_chunk
            yield from stream

        return StreamingResponse(body(), media_type=media_type, headers=headers)

    download.__name__ = "download_" + segment.removesuffix(".png").replace("-", "_")  # the operation id
    router.add_api_route(f"/{{job_id}}/{segment}", download, methods=["GET"], response_class=StreamingResponse,
                         summary=f"Download {file}",
                         responses={200: {"content": {media_type: {"schema": _schema(media_type)}},
                                          "description": file}})


for _segment in DOWNLOADS:
    _download_route(_segment)
