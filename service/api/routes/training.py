"""Training jobs over HTTP: queue one, follow its progress (JSON or server-sent events), cancel it.

``POST /v1/training-jobs`` checks what it can without torch (the dataset is ready, the architecture
and method exist, the model name is valid, the hyperparameters are in range), commits a ``queued``
training job whose ``params`` are the contract of ``worker.tasks.training``, and sends
``adacs.training.run`` with the job's id to the ``training`` queue.

Progress is the job row's ``progress`` (the worker writes it with its heartbeat): ``phase``,
``epoch``/``epochs``, ``step``/``steps_per_epoch``, ``global_step``/``total_steps``, ``losses``,
``m_t``, ``val_dice``, ``elapsed_s`` and ``eta_s``. ``GET .../events`` streams it as server-sent
events: ``event: progress`` with the job's JSON whenever it changes, and ``event: end`` once the
job has finished; a comment line keeps idle connections open.

Cancelling is cooperative: ``POST .../cancel`` sets ``cancel_requested``; a queued job ends
``cancelled`` at once, a running one when its worker next looks (at every training step).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.api.deps import CurrentKey, SessionDep, TrainKey
from service.api.errors import ApiError
from service.api.routes import API_V1
from service.api.routes.datasets import load_dataset
from service.api.schemas import ErrorPublic, TrainingJobCreate, TrainingJobPublic, TrainingJobsPublic
from service.catalog import ARCHITECTURE_NAMES, METHOD_NAMES
from service.db import DatasetStatus, Job, JobKind, JobStatus, new_id, session_scope, utcnow
from service.registry import InvalidReference
from service.registry.refs import check_name

__all__ = ["router"]

_ERRORS = {code: {"model": ErrorPublic} for code in (401, 403, 404, 409, 422)}
router = APIRouter(prefix=f"{API_V1}/training-jobs", tags=["training"], responses=_ERRORS)
JobId = Annotated[str, PathParam(description="the training job's id (a UUID)")]
EVENTS_POLL_S = 0.5
KEEPALIVE_S = 15.0


class TrainingJobNotFound(ApiError):
    def __init__(self, job_id: str) -> None:
        super().__init__(404, f"no training job with id {job_id!r}; list them with GET {API_V1}/training-jobs",
                         "not_found")


def _load(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.kind != JobKind.TRAINING:
        raise TrainingJobNotFound(job_id)
    return job


def _public(job: Job) -> TrainingJobPublic:
    params, result = job.params or {}, job.result or {}
    base = f"{API_V1}/training-jobs/{job.id}"
    return TrainingJobPublic(
        id=job.id, status=job.status.value, dataset_id=params.get("dataset_id", ""),
        model_name=params.get("model_name", ""), architecture=params.get("architecture", ""),
        architecture_options=params.get("architecture_options") or {},
        method=params.get("method", ""), hyperparameters=params.get("hyperparameters", {}),
        val_fraction=params.get("val_fraction", 0.0), progress=job.progress or {}, error=job.error,
        attempts=job.attempts, cancel_requested=job.cancel_requested, created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at,
        model_version=(result.get("model") or {}).get("ref"), result=result or None, url=base,
        events_url=f"{base}/events")


def _check(body: TrainingJobCreate, session: Session) -> None:
    if body.architecture not in ARCHITECTURE_NAMES:
        raise ApiError(422, f"unknown architecture {body.architecture!r}; known: {', '.join(ARCHITECTURE_NAMES)}",
                       "invalid_architecture")
    if body.method not in METHOD_NAMES:
        raise ApiError(422, f"unknown method {body.method!r}; known: {', '.join(METHOD_NAMES)}", "invalid_method")
    try:
        check_name(body.model_name)
    except InvalidReference as error:
        raise ApiError(422, str(error), "invalid_model_name") from error
    hp = body.hyperparameters
    micro = hp.micro_batch_size or min(4, hp.batch_size)
    if hp.batch_size % micro:
        raise ApiError(422, f"batch_size {hp.batch_size} must be a multiple of micro_batch_size {micro}",
                       "invalid_hyperparameters")
    dataset = load_dataset(session, body.dataset_id)
    if dataset.status != DatasetStatus.READY:
        raise ApiError(409, f"dataset {dataset.id} is {dataset.status.value}, not ready", "dataset_not_ready")


@router.post("", status_code=status.HTTP_202_ACCEPTED, summary="Queue a training job on an uploaded dataset",
             responses={202: {"description": "queued; follow the Location header or its events_url"},
                        503: {"model": ErrorPublic, "description": "the broker is unreachable"}})
def create_training_job(body: TrainingJobCreate, request: Request, response: Response, session: SessionDep,
                        key: TrainKey) -> TrainingJobPublic:
    _check(body, session)
    job = Job(id=new_id(), kind=JobKind.TRAINING, status=JobStatus.QUEUED,
              owner_key_id=key.id if key is not None else None,
              params={"dataset_id": body.dataset_id, "model_name": body.model_name,
                      "architecture": body.architecture, "architecture_options": body.architecture_options,
                      "method": body.method,
                      "hyperparameters": body.hyperparameters.model_dump(), "val_fraction": body.val_fraction})
    session.add(job)
    session.commit()
    try:
        request.state.tasks.send_training(job.id)
    except Exception as error:
        session.delete(job)
        session.commit()
        raise ApiError(503, f"the job could not be queued, the broker is unreachable ({type(error).__name__}: "
                            f"{error}); nothing was kept, try again later", "broker_unavailable") from error
    response.headers["Location"] = f"{API_V1}/training-jobs/{job.id}"
    return _public(job)


@router.get("", summary="List training jobs, newest first")
def list_training_jobs(session: SessionDep, _key: CurrentKey, offset: Annotated[int, Query(ge=0)] = 0,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> TrainingJobsPublic:
    where = Job.kind == JobKind.TRAINING
    jobs = session.scalars(select(Job).where(where).order_by(Job.created_at.desc(), Job.id.desc())
                           .offset(offset).limit(limit))
    count = session.scalar(select(func.count(Job.id)).where(where)) or 0
    return TrainingJobsPublic(data=[_public(job) for job in jobs], count=count)


@router.get("/{job_id}", summary="One training job: status, progress (phase, epoch, losses, m_t, val Dice, ETA)")
def read_training_job(job_id: JobId, session: SessionDep, _key: CurrentKey) -> TrainingJobPublic:
    return _public(_load(session, job_id))


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED,
             summary="Ask a training job to stop (a queued one stops at once, a running one at its next step)")
def cancel_training_job(job_id: JobId, session: SessionDep, _key: TrainKey) -> TrainingJobPublic:
    job = _load(session, job_id)
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


def _snapshot(request: Request, job_id: str) -> TrainingJobPublic | None:
    with session_scope(request.state.session_factory) as session:
        job = session.get(Job, job_id)
        return _public(job) if job is not None and job.kind == JobKind.TRAINING else None


@router.get("/{job_id}/events", summary="Server-sent events of the job's progress until it finishes",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "'progress' events with the job's JSON, then one 'end' event"}})
async def training_job_events(job_id: JobId, request: Request, _key: CurrentKey) -> StreamingResponse:
    first = await run_in_threadpool(_snapshot, request, job_id)
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
            current = await run_in_threadpool(_snapshot, request, job_id) or current

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
