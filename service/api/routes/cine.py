"""Cine registrations over HTTP: upload a cine and its reference frame's mask, follow the job, download.

``POST /v1/cine-registrations`` keeps the contract of ``worker.tasks.cine`` (its docstring): the
uploads go to ``store.job_dir(id)/inputs/cine<ext>`` and ``reference_mask<ext>``; the cine's header
is checked (a series of frames, not too many, each frame within the voxel limit), then every frame
and the mask are read by the worker's own function, the reference frame must exist and the mask
must lie on the frames' grid; only then is the ``queued`` row committed and ``adacs.cine.run``
sent. A refused upload leaves no row and no files; errors name the form field. Access as for pair
registrations (``service.api.routes.registrations``): a key sees only its own jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile, status

from models.io.errors import FrameOutOfRangeError, ImageError
from models.io.readers import check_header, check_mask, read_header
from models.io.readers.inputs import read_cine_inputs
from models.io.readers.read import check_cine_header, read_cine_header
from service.api.deps import CurrentPrincipal, RegisterPrincipal, SessionDep, SettingsDep, StoreDep
from service.api.errors import ApiError
from service.api.forms import label_names_field, refuse_unknown_form_fields
from service.api.job_routes import JobFiles
from service.api.params import INT32_MAX, Limit, Offset, uuid_path
from service.api.routes import API_V1, error_responses
from service.api.routes.registrations import (
    MAX_LABELS_FIELD,
    MAX_REFINE_STEPS,
    MAX_REFINE_TIME_S,
    MAX_WAIT_S,
    SERIES_PATTERN,
)
from service.api.schemas import CineRegistrationPublic, CineRegistrationsPublic, ErrorPublic, OutputPublic
from service.api.staging import all_or_nothing, extension, named_by_field, save_upload
from service.core.config import Settings
from service.db import Job, JobKind, JobStatus, new_id
from service.jobs.cine import CineParams
from service.jobs.registration import RegistrationResult
from service.registry import resolve
from service.retention import remove_job_files

__all__ = ["router", "DOWNLOADS"]

router = APIRouter(prefix=f"{API_V1}/cine-registrations", tags=["cine"], responses=error_responses(410, 413, 415),
                   dependencies=[Depends(refuse_unknown_form_fields)])
JobId = Annotated[str, uuid_path("cine registration")]
# URL segment -> (output role in job.result, media type, file name): models.cine_files.CINE_OUTPUTS.
DOWNLOADS = {
    "displacements": ("displacements", "application/gzip", "displacements.nii.gz"),
    "warped-masks": ("warped_masks", "application/gzip", "warped_masks.nii.gz"),
    "volumes.csv": ("volumes", "text/csv", "volumes.csv"),
    "volume-curve.png": ("volume_curve", "image/png", "volume_curve.png"),
    "report": ("report", "application/json", "report.json"),
}
FILES = JobFiles(JobKind.CINE, "cine registration", f"{API_V1}/cine-registrations", DOWNLOADS,
                 operation="download_cine_")


def _check_inputs(inputs: dict[str, Path], series: str | None, reference: int, settings: Settings) -> None:
    """Refuse now what the worker would: the headers first (cheap), then every voxel and the mask's grid."""
    try:
        header = read_cine_header(inputs["cine"], series=series)
        check_cine_header(header, max_voxels=settings.max_voxels, max_frames=settings.max_cine_frames)
        if reference >= header.n_frames:
            raise FrameOutOfRangeError(f"reference_frame={reference} is out of range: the cine has {header.n_frames} "
                                       "frames", path="reference_frame",
                                       hint=f"choose a frame from 0 to {header.n_frames - 1}")
        check_header(read_header(inputs["reference_mask"]), frame_name=None, max_voxels=settings.max_voxels)
        frames, mask = read_cine_inputs(inputs["cine"], inputs["reference_mask"], series=series,
                                        max_voxels=settings.max_voxels, max_frames=settings.max_cine_frames)
        check_mask(mask, frames[reference])
    except ImageError as error:
        raise named_by_field(error, inputs) from error


def _public(job: Job) -> CineRegistrationPublic:
    params, result = CineParams.parse(job.params), RegistrationResult.read(job.result)
    base = f"{API_V1}/cine-registrations/{job.id}"
    return CineRegistrationPublic(
        id=job.id, status=job.status.value, model=params.model or "",
        model_version=result.model.ref if result.model else None, reference_frame=params.reference_frame,
        progress=job.progress or {}, error=job.error, attempts=job.attempts, created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at, timings_s=result.timings_s, report=result.report,
        expired_at=job.expired_at, url=base,
        outputs={role: OutputPublic(**link) for role, link in FILES.output_links(job, base).items()})


@router.post("", status_code=status.HTTP_202_ACCEPTED,
             summary="Upload a cine and its reference frame's mask; every frame is registered to the reference",
             responses={200: {"model": CineRegistrationPublic, "description": "finished within `wait` seconds"},
                        202: {"description": "queued; follow the Location header"},
                        503: {"model": ErrorPublic, "description": "the broker is unreachable"}})
def create_cine_registration(
    request: Request, response: Response, session: SessionDep, store: StoreDep, settings: SettingsDep,
    principal: RegisterPrincipal,
    cine: Annotated[UploadFile, File(description="the cine: a 4-D image (x, y, z, t) as NIfTI, MetaImage or NRRD, "
                                                 "or a DICOM cine series (folder zip)")],
    reference_mask: Annotated[UploadFile, File(description="label map of the reference frame, on its grid")],
    model: Annotated[str | None, Form(description="'name', 'name:3' or 'name@stage'; default: "
                                                  "ADACS_DEFAULT_MODEL")] = None,
    reference_frame: Annotated[int, Form(ge=0, le=INT32_MAX, description="the frame the mask was drawn on "
                                                                         "(0-based; default 0, end-diastole)")] = 0,
    cine_series: Annotated[str | None, Form(max_length=64, pattern=SERIES_PATTERN,
                                            description="DICOM SeriesInstanceUID (or prefix)")] = None,
    refine_steps: Annotated[int | None, Form(ge=0, le=MAX_REFINE_STEPS, description=(
        "test-time refinement steps per frame batch; default: the model card's"))] = None,
    refine_time_limit_s: Annotated[float | None, Form(gt=0, le=MAX_REFINE_TIME_S, allow_inf_nan=False, description=(
        "stop refining a batch of frames after this many seconds; default: the model card's"))] = None,
    refine_similarity: Annotated[Literal["mse", "ncc"] | None, Form(description=(
        "image term refinement optimises: mse (training's) or ncc (local correlation); default: the card's"))] = None,
    labels: Annotated[str | None, Form(max_length=MAX_LABELS_FIELD, description=(
        'names of the mask\'s labels, a JSON object: {"1": "RV", "2": "myocardium", "3": "LV"}; a label named '
        "LV or 'left ventricle' gives ED, ES and the ejection fraction"))] = None,
    lv_label: Annotated[int | None, Form(ge=1, le=INT32_MAX, description="the left ventricle's label, "
                                                                         "if no label is named so")] = None,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for the result")] = 0,
) -> CineRegistrationPublic:
    label_names = label_names_field(labels)
    ref = model or settings.default_model
    resolve(session, ref, viewer=principal)  # an unknown (or another key's) model is a 404 now, not a failed job
    job_id = new_id()
    with all_or_nothing(session, store.job_dir(job_id)) as folder:
        (folder / "inputs").mkdir()
        inputs = {}
        for role, upload in (("cine", cine), ("reference_mask", reference_mask)):
            inputs[role] = folder / "inputs" / f"{role}{extension(upload.filename)}"
            save_upload(upload, inputs[role], settings.max_upload_bytes)
        _check_inputs(inputs, cine_series or None, reference_frame, settings)
        params = CineParams(model=ref, inputs={r: f"inputs/{p.name}" for r, p in inputs.items()},
                            cine_series=cine_series or None, reference_frame=reference_frame,
                            refine_steps=refine_steps, refine_time_limit_s=refine_time_limit_s,
                            refine_similarity=refine_similarity, label_names=label_names, lv_label=lv_label)
        job = Job(id=job_id, kind=JobKind.CINE, status=JobStatus.QUEUED, owner_key_id=principal.key_id,
                  params=params.to_row())
        session.add(job)
        session.commit()
    FILES.dispatch(session, store, request.state.tasks, job, wait, response)
    return _public(job)


@router.get("", summary="List cine registrations, newest first")
def list_cine_registrations(session: SessionDep, principal: CurrentPrincipal, offset: Offset = 0,
                            limit: Limit = 100) -> CineRegistrationsPublic:
    jobs, count = FILES.page(session, principal, offset, limit)
    return CineRegistrationsPublic(data=[_public(job) for job in jobs], count=count)


@router.get("/{job_id}", summary="One cine registration: status, progress (frame of frames), report, outputs")
def read_cine_registration(job_id: JobId, session: SessionDep, principal: CurrentPrincipal) -> CineRegistrationPublic:
    return _public(FILES.load(session, job_id, principal))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a cine registration and its files (refused while it runs)")
def delete_cine_registration(job_id: JobId, session: SessionDep, store: StoreDep,
                             principal: RegisterPrincipal) -> Response:
    job = FILES.load(session, job_id, principal)
    if job.status == JobStatus.RUNNING:
        raise ApiError(409, f"cine registration {job_id} is running; delete it once it has finished", "job_running")
    remove_job_files(session, store, job)
    session.delete(job)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


FILES.add_download_routes(router, JobId)
