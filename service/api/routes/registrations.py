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

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile, status

from models.io.errors import DimensionMismatchError, ImageError
from models.io.readers import check_header, read_header, read_registration_inputs
from models.io.readers.inputs import FRAME_ROLES
from service.api.deps import CurrentPrincipal, RegisterPrincipal, SessionDep, SettingsDep, StoreDep
from service.api.errors import ApiError
from service.api.forms import label_names_field, refuse_unknown_form_fields
from service.api.job_routes import JobFiles
from service.api.params import Limit, Offset, uuid_path
from service.api.routes import API_V1, error_responses
from service.api.schemas import ErrorPublic, OutputPublic, RegistrationPublic, RegistrationsPublic
from service.api.staging import all_or_nothing, extension, named_by_field, save_upload
from service.core.config import Settings
from service.db import Job, JobKind, JobStatus, new_id
from service.jobs.registration import RegistrationParams, RegistrationResult
from service.registry import resolve
from service.retention import remove_job_files

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
# Why an optional output is absent, as the 404 says it.
_ABSENT = {"warped_mask": " (no moving_mask was uploaded)",
           "preview": " (it is drawn by a worker when first asked for, and this one could not draw it)",
           "warped_mask_seg": " (a DICOM SEG is made only for a DICOM fixed image with a moving_mask; when the "
                              "fixed series could not carry one, the report's dicom_seg says why)"}
# preview.png is drawn when first downloaded (worker.tasks.registration.draw_preview), not with every job.
FILES = JobFiles(JobKind.REGISTRATION, "registration", f"{API_V1}/registrations", DOWNLOADS, _ABSENT,
                 on_demand={"preview": lambda tasks, job_id: tasks.send_preview(job_id)})
MAX_WAIT_S = 60.0
SERIES_PATTERN = r"^[0-9.]*$"  # a DICOM UID (digits and dots), or its prefix
MAX_FRAME = 100_000
MAX_REFINE_STEPS = 2000  # test-time refinement: a bound on a job's cost (about 0.004 s a step per 2D slice on CPU)
MAX_REFINE_TIME_S = 300.0
MAX_LABELS_FIELD = 20_000  # bytes of the labels JSON: 255 names of 64 characters, quoted


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
        raise named_by_field(error, inputs) from error


def _public(job: Job, request: Request) -> RegistrationPublic:
    params, result = RegistrationParams.parse(job.params), RegistrationResult.read(job.result)
    base = f"{API_V1}/registrations/{job.id}"
    outputs = {role: OutputPublic(**link) for role, link in FILES.output_links(job, base).items()}
    return RegistrationPublic(
        id=job.id, status=job.status.value, model=params.model or "",
        model_version=result.model.ref if result.model else None,
        inputs=sorted(params.inputs, key=(IMAGE_ROLES + MASK_ROLES).index),
        progress=job.progress or {}, error=job.error, attempts=job.attempts, created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at, timings_s=result.timings_s,
        report=result.report, expired_at=job.expired_at, url=base, outputs=outputs)


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
    label_names = label_names_field(labels)
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
    FILES.dispatch(session, store, request.state.tasks, job, wait, response)
    return _public(job, request)


@router.get("", summary="List registrations, newest first")
def list_registrations(request: Request, session: SessionDep, principal: CurrentPrincipal, offset: Offset = 0,
                       limit: Limit = 100) -> RegistrationsPublic:
    jobs, count = FILES.page(session, principal, offset, limit)
    return RegistrationsPublic(data=[_public(job, request) for job in jobs], count=count)


@router.get("/{job_id}", summary="One registration: status, progress, error, timings and output links")
def read_registration(job_id: JobId, request: Request, session: SessionDep,
                      principal: CurrentPrincipal) -> RegistrationPublic:
    return _public(FILES.load(session, job_id, principal), request)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a registration and its files (refused while it runs)")
def delete_registration(job_id: JobId, session: SessionDep, store: StoreDep,
                        principal: RegisterPrincipal) -> Response:
    job = FILES.load(session, job_id, principal)
    if job.status == JobStatus.RUNNING:
        raise ApiError(409, f"registration {job_id} is running; delete it once it has finished", "job_running")
    remove_job_files(session, store, job)  # its folder, and the outputs no other job or model shares, on commit
    session.delete(job)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


FILES.add_download_routes(router, JobId)
