"""Training jobs over HTTP: queue one, follow its progress (JSON or server-sent events), cancel it.

``POST /v1/training-jobs`` checks what it can without torch (the dataset is ready, and has both masks
on every pair for label-assisted training; the architecture and method exist, the model name is valid,
the hyperparameters are in range, ``devices`` is 1 to 8 and divides ``batch_size``), commits a ``queued``
training job whose ``params`` are the contract of ``worker.tasks.training``, and sends
``adacs.training.run`` with the job's id to the ``training`` queue.

Progress is the job row's ``progress`` (the worker writes it with its heartbeat): ``phase``,
``epoch``/``epochs``, ``step``/``steps_per_epoch``, ``global_step``/``total_steps``, ``losses``,
``m_t``, ``val_dice``, ``elapsed_s`` and ``eta_s``. ``GET .../events`` streams it as server-sent
events: ``event: progress`` with the job's JSON whenever it changes, and ``event: end`` once the
job has finished; a comment line keeps idle connections open.

Cancelling is cooperative: ``POST .../cancel`` sets ``cancel_requested``; a queued job ends
``cancelled`` at once, a running one when its worker next looks (at every training step).

A training job belongs to the key that queued it (other keys get 404; ``admin`` keys see all). It
trains on one of its owner's datasets and registers its model as a new version of one of its
owner's models (a new name becomes the owner's model); it never moves a stage label. Budgets are
capped by settings: updates per job (``ADACS_MAX_TRAINING_STEPS``) and unfinished jobs per owner
(``ADACS_MAX_ACTIVE_TRAININGS_PER_OWNER``, 429 past it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.defaults import default_micro_batch_size
from service.access import Principal, may_see, owned_by
from service.api.deps import CurrentPrincipal, SessionDep, SettingsDep, TrainPrincipal
from service.api.errors import ApiError
from service.api.params import Limit, Offset, is_uuid, uuid_path
from service.api.routes import API_V1, error_responses
from service.api.routes.datasets import load_dataset
from service.api.schemas import ErrorPublic, TrainingJobCreate, TrainingJobPublic, TrainingJobsPublic
from service.catalog import ARCHITECTURE_NAMES, METHOD_NAMES
from service.core.config import Settings
from service.db import Dataset, DatasetStatus, Job, JobKind, JobStatus, Model, new_id, session_scope, utcnow
from service.jobs.training import TrainingParams, TrainingResult
from service.registry import InvalidReference, check_may_add_version
from service.registry.refs import check_name

__all__ = ["router"]

_ERRORS = error_responses()
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
router = APIRouter(prefix=f"{API_V1}/training-jobs", tags=["training"], responses=_ERRORS)
JobId = Annotated[str, uuid_path("training job")]
# One server-sent event, as OpenAPI before 3.2 describes a stream: each event's fields; ``data`` is
# the job as ``GET /v1/training-jobs/{id}`` returns it. Comment lines (keep-alives) are not events.
EVENT_SCHEMA = {
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"type": "string", "enum": ["progress", "end"]},
                   "data": {"type": "string", "contentMediaType": "application/json",
                            "contentSchema": {"$ref": "#/components/schemas/TrainingJobPublic"}}},
}
EVENTS_POLL_S = 0.5
KEEPALIVE_S = 15.0


class TrainingJobNotFound(ApiError):
    def __init__(self, job_id: str) -> None:
        super().__init__(404, f"no training job with id {job_id!r}; list them with GET {API_V1}/training-jobs",
                         "not_found")


def _load(session: Session, job_id: str, principal: Principal) -> Job:
    job = session.get(Job, job_id) if is_uuid(job_id) else None
    if job is None or job.kind != JobKind.TRAINING or not may_see(principal, job.owner_key_id):
        raise TrainingJobNotFound(job_id)
    return job


def _public(job: Job) -> TrainingJobPublic:
    params, result = TrainingParams.parse(job.params), TrainingResult.read(job.result)
    base = f"{API_V1}/training-jobs/{job.id}"
    return TrainingJobPublic(
        id=job.id, status=job.status.value, dataset_id=params.dataset_id, model_name=params.model_name,
        architecture=params.architecture, architecture_options=params.architecture_options, method=params.method,
        hyperparameters=params.hyperparameters, val_fraction=params.val_fraction, devices=params.devices,
        progress=job.progress or {},
        error=job.error, attempts=job.attempts, cancel_requested=job.cancel_requested, created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at,
        model_version=result.model.ref if result.model else None,
        result=job.result or None,  # as recorded: a failed job's {"error": ...} too
        expired_at=job.expired_at, url=base, events_url=f"{base}/events")


def _check_budget(body: TrainingJobCreate, session: Session, settings: Settings, principal: Principal) -> None:
    """The job's updates, and its owner's unfinished jobs, within the operator's caps."""
    hp = body.hyperparameters
    steps = (2 * hp.warmup_epochs + hp.epochs) * hp.steps_per_epoch  # at most two warm-up phases (AdaCS)
    if steps > settings.max_training_steps:
        raise ApiError(422, f"this job asks for up to {steps} optimiser updates ((2 × warmup_epochs + epochs) × "
                            f"steps_per_epoch); this server allows {settings.max_training_steps} per job "
                            "(ADACS_MAX_TRAINING_STEPS)", "budget_too_large")
    owner = Job.owner_key_id.is_(None) if principal.key_id is None else Job.owner_key_id == principal.key_id
    active = session.scalar(select(func.count(Job.id)).where(Job.kind == JobKind.TRAINING, Job.status.in_(ACTIVE),
                                                             owner)) or 0
    if active >= settings.max_active_trainings_per_owner:
        raise ApiError(429, f"this key has {active} training jobs queued or running, the most this server allows "
                            f"(ADACS_MAX_ACTIVE_TRAININGS_PER_OWNER); wait for one to finish or cancel one",
                       "too_many_active_jobs")


def _check_model_name(name: str, session: Session, principal: Principal) -> None:
    """The model the job will add a version to is new, or the caller's (403/409 otherwise, now, not at the end)."""
    try:
        check_name(name)
    except InvalidReference as error:
        raise ApiError(422, str(error), "invalid_model_name") from error
    model = session.scalars(select(Model).where(Model.name == name)).one_or_none()
    if model is not None:
        check_may_add_version(model, principal)


def _check(body: TrainingJobCreate, session: Session, principal: Principal) -> None:
    if body.architecture not in ARCHITECTURE_NAMES:
        raise ApiError(422, f"unknown architecture {body.architecture!r}; known: {', '.join(ARCHITECTURE_NAMES)}",
                       "invalid_architecture")
    if body.method not in METHOD_NAMES:
        raise ApiError(422, f"unknown method {body.method!r}; known: {', '.join(METHOD_NAMES)}", "invalid_method")
    _check_model_name(body.model_name, session, principal)
    hp = body.hyperparameters
    micro = hp.micro_batch_size or default_micro_batch_size(hp.batch_size)
    if hp.batch_size % micro:
        raise ApiError(422, f"batch_size {hp.batch_size} must be a multiple of micro_batch_size {micro}",
                       "invalid_hyperparameters")
    if hp.batch_size % body.devices:
        raise ApiError(422, f"hyperparameters.batch_size {hp.batch_size} must be a multiple of devices "
                            f"{body.devices}: each process takes an equal share of every update's pairs",
                       "invalid_devices")
    dataset = load_dataset(session, body.dataset_id, principal)
    if dataset.status != DatasetStatus.READY:
        raise ApiError(409, f"dataset {dataset.id} is {dataset.status.value}, not ready", "dataset_not_ready")
    if hp.supervision == "labels":
        _check_masks(dataset)


def _check_masks(dataset: Dataset) -> None:
    """Label-assisted training needs both masks of every pair: refused now, not when the worker gets to it.

    The upload's check counted the pairs with both masks (``n_labelled``); a dataset checked before that
    count existed has none recorded and is refused too, rather than guessed at.
    """
    info = dataset.info or {}
    labelled, pairs = info.get("n_labelled"), info.get("n_pairs", dataset.n_pairs)
    if labelled is None or pairs is None or labelled < pairs:
        have = "no record of its masks" if labelled is None else f"both masks on {labelled} of its {pairs} pairs"
        raise ApiError(422, f"hyperparameters.supervision 'labels' needs a dataset with both masks (fixed and "
                            f"moving) on every pair, and dataset {dataset.id} has {have}; upload one with masks "
                            "or use supervision 'none'", "dataset_without_masks")


@router.post("", status_code=status.HTTP_202_ACCEPTED, summary="Queue a training job on an uploaded dataset",
             responses={202: {"description": "queued; follow the Location header or its events_url"},
                        429: {"model": ErrorPublic, "description": "the key has too many unfinished training jobs"},
                        503: {"model": ErrorPublic, "description": "the broker is unreachable"}})
def create_training_job(body: TrainingJobCreate, request: Request, response: Response, session: SessionDep,
                        settings: SettingsDep, principal: TrainPrincipal) -> TrainingJobPublic:
    _check(body, session, principal)
    _check_budget(body, session, settings, principal)
    params = TrainingParams(dataset_id=body.dataset_id, model_name=body.model_name, architecture=body.architecture,
                            architecture_options=body.architecture_options, method=body.method,
                            hyperparameters=body.hyperparameters.model_dump(), val_fraction=body.val_fraction,
                            devices=body.devices)
    job = Job(id=new_id(), kind=JobKind.TRAINING, status=JobStatus.QUEUED, owner_key_id=principal.key_id,
              params=params.to_row())
    session.add(job)
    session.commit()
    try:
        request.state.tasks.send(JobKind.TRAINING, job.id)
    except Exception as error:
        session.delete(job)
        session.commit()
        raise ApiError(503, f"the job could not be queued, the broker is unreachable ({type(error).__name__}: "
                            f"{error}); nothing was kept, try again later", "broker_unavailable") from error
    response.headers["Location"] = f"{API_V1}/training-jobs/{job.id}"
    return _public(job)


@router.get("", summary="List training jobs, newest first")
def list_training_jobs(session: SessionDep, principal: CurrentPrincipal, offset: Offset = 0,
                       limit: Limit = 100) -> TrainingJobsPublic:
    where = (Job.kind == JobKind.TRAINING) & owned_by(principal, Job.owner_key_id)
    jobs = session.scalars(select(Job).where(where).order_by(Job.created_at.desc(), Job.id.desc())
                           .offset(offset).limit(limit))
    count = session.scalar(select(func.count(Job.id)).where(where)) or 0
    return TrainingJobsPublic(data=[_public(job) for job in jobs], count=count)


@router.get("/{job_id}", summary="One training job: status, progress (phase, epoch, losses, m_t, val Dice, ETA)")
def read_training_job(job_id: JobId, session: SessionDep, principal: CurrentPrincipal) -> TrainingJobPublic:
    return _public(_load(session, job_id, principal))


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED,
             summary="Ask a training job to stop (a queued one stops at once, a running one at its next step)")
def cancel_training_job(job_id: JobId, session: SessionDep, principal: TrainPrincipal) -> TrainingJobPublic:
    job = _load(session, job_id, principal)
    if job.status.finished:
        raise ApiError(409, f"training job {job_id} already {job.status.value}", "job_finished")
    # Conditional updates: the worker may claim or finish the job between our read and our write.
    session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True)
                    .execution_options(synchronize_session=False))
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                    .values(status=JobStatus.CANCELLED, finished_at=utcnow(), progress={"phase": "cancelled"})
                    .execution_options(synchronize_session=False))
    session.commit()
    session.refresh(job)
    return _public(job)


def _snapshot(request: Request, job_id: str, principal: Principal) -> TrainingJobPublic | None:
    with session_scope(request.state.session_factory) as session:
        job = session.get(Job, job_id) if is_uuid(job_id) else None
        visible = job is not None and job.kind == JobKind.TRAINING and may_see(principal, job.owner_key_id)
        return _public(job) if visible else None


@router.get("/{job_id}/events", summary="Server-sent events of the job's progress until it finishes",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
                             "description": "'progress' events with the job's JSON, then one 'end' event"}})
async def training_job_events(job_id: JobId, request: Request, principal: CurrentPrincipal) -> StreamingResponse:
    first = await run_in_threadpool(_snapshot, request, job_id, principal)
    if first is None:
        raise TrainingJobNotFound(job_id)

    async def events() -> AsyncIterator[str]:
        current, last_body, last_sent = first, None, time.monotonic()
        while True:
            body = current.model_dump_json()
            if current.status in ("succeeded", "failed", "cancelled"):
                yield f"event: end\ndata: {body}\n\n"
                return
            if body != last_body:
                yield f"event: progress\ndata: {body}\n\n"
                last_body, last_sent = body, time.monotonic()
            elif time.monotonic() - last_sent > KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(EVENTS_POLL_S)
            if await request.is_disconnected():
                return
            current = await run_in_threadpool(_snapshot, request, job_id, principal) or current

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
