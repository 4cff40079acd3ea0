"""The model registry over HTTP: list, inspect, upload, promote, delete and download model versions.

Reading needs no scope (only a valid key when keys are on); changing the registry (upload, promote,
demote, delete) needs ``admin``. A key reads the shared catalogue (models with no owner: the
starter, what admins uploaded) and its own models (what its training jobs registered); another
key's model is a 404 (``service.access``). Uploads by an admin join the shared catalogue.
Registry and archive errors carry their HTTP status and are answered by the app's one handler.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from service.access import models_visible_to
from service.api.artifacts import unpacked_artifact, zip_stream
from service.api.deps import AdminPrincipal, CurrentPrincipal, SessionDep, SettingsDep, StoreDep
from service.api.forms import refuse_unknown_form_fields
from service.api.params import INT32_MAX, Limit, Offset
from service.api.routes import API_V1, error_responses
from service.api.schemas import (
    ErrorPublic,
    ModelDetailPublic,
    ModelPublic,
    ModelsPublic,
    ModelVersionPublic,
    ModelVersionSummary,
    PromotionCreate,
    StageAssignmentPublic,
)
from service.db import Model, ModelVersion
from service.registry import delete_version, demote, get_model, get_version, promote, register_version
from service.registry.refs import check_name

_ERRORS = error_responses()
router = APIRouter(prefix=f"{API_V1}/models", tags=["models"], responses=_ERRORS,
                   dependencies=[Depends(refuse_unknown_form_fields)])

# Names and stages are checked by the registry (service.registry.refs), whose 422 says what a valid one is.
ModelName = Annotated[str, Path(max_length=128, description="the model's name", examples=["cardiac"])]
VersionNumber = Annotated[int, Path(ge=1, le=INT32_MAX, description="the version number (1, 2, ...)")]
StageName = Annotated[str, Path(max_length=32, description="a stage label", examples=["production"])]


def _stages(model: Model) -> dict[str, int]:
    return {a.stage: a.version for a in model.stages}


def _version(model: Model, version: ModelVersion, *, card: bool) -> ModelVersionSummary:
    labels = sorted(stage for stage, number in _stages(model).items() if number == version.version)
    fields = dict(model=model.name, version=version.version, ref=f"{model.name}:{version.version}",
                  sha256=version.sha256, stages=labels, source_job_id=version.source_job_id,
                  created_at=version.created_at)
    return ModelVersionPublic(**fields, card=version.card) if card else ModelVersionSummary(**fields)


def _model(model: Model, *, cards: bool) -> ModelPublic:
    versions = [_version(model, v, card=cards) for v in model.versions]
    schema = ModelDetailPublic if cards else ModelPublic
    return schema(name=model.name, created_at=model.created_at, stages=_stages(model),
                  latest_version=versions[-1].version if versions else None, versions=versions)


@router.get("", summary="List models with their versions and stage labels")
def list_models(session: SessionDep, principal: CurrentPrincipal, offset: Offset = 0,
                limit: Limit = 100) -> ModelsPublic:
    visible = models_visible_to(principal)
    query = (select(Model).where(visible).options(selectinload(Model.versions), selectinload(Model.stages))
             .order_by(Model.name).offset(offset).limit(limit))
    count = session.scalar(select(func.count(Model.id)).where(visible)) or 0
    return ModelsPublic(data=[_model(m, cards=False) for m in session.scalars(query)], count=count)


@router.post("", status_code=status.HTTP_201_CREATED, summary="Upload a model artifact zip as a new version",
             responses={200: {"model": ModelVersionPublic, "description": "the same content was already registered "
                                                                           "as this version"},
                        400: {"model": ErrorPublic, "description": "not a zip, or an unsafe one"}})
def upload_model_version(
    name: Annotated[str, Form(description="model to add the version to (created on its first version)")],
    file: Annotated[UploadFile, File(description="zip of config.json, model.safetensors and card.json "
                                                 "(at its root or in one folder)")],
    session: SessionDep, store: StoreDep, settings: SettingsDep, principal: AdminPrincipal, request: Request,
    response: Response,
) -> ModelVersionPublic:
    check_name(name)  # before any work on the upload
    before = set(session.scalars(select(ModelVersion.id).join(Model).where(Model.name == name)))
    file.file.seek(0)
    with unpacked_artifact(store, file.file, file.filename, settings.max_upload_bytes) as directory:
        version = register_version(session, store, name, directory, owner=principal, shared=True)
    if version.id in before:
        response.status_code = status.HTTP_200_OK
    else:
        response.headers["Location"] = str(request.url_for("read_model_version", name=name, version=version.version))
    return _version(get_model(session, name), version, card=True)


@router.get("/{name}", summary="One model with its versions, their cards and its stage labels")
def read_model(name: ModelName, session: SessionDep, principal: CurrentPrincipal) -> ModelDetailPublic:
    return _model(get_model(session, name, viewer=principal), cards=True)


@router.get("/{name}/versions/{version}", summary="One model version with its card")
def read_model_version(name: ModelName, version: VersionNumber, session: SessionDep,
                       principal: CurrentPrincipal) -> ModelVersionPublic:
    found = get_version(session, name, version, viewer=principal)
    return _version(found.model, found, card=True)


@router.post("/{name}/versions/{version}/promote", summary="Point a stage label at this version")
def promote_model_version(name: ModelName, version: VersionNumber, body: PromotionCreate, session: SessionDep,
                          _principal: AdminPrincipal) -> StageAssignmentPublic:
    assignment = promote(session, name, version, body.stage)
    return StageAssignmentPublic(model=name, stage=assignment.stage, version=assignment.version,
                                 updated_at=assignment.updated_at)


@router.delete("/{name}/stages/{stage}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a stage label (the version stays)")
def remove_stage_label(name: ModelName, stage: StageName, session: SessionDep, _principal: AdminPrincipal) -> Response:
    demote(session, name, stage)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{name}/versions/{version}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a version (refused while a stage label points at it, unless force)")
def delete_model_version(name: ModelName, version: VersionNumber, session: SessionDep, store: StoreDep,
                         _principal: AdminPrincipal,
                         force: Annotated[bool, Query(description="also remove its labels")] = False) -> Response:
    delete_version(session, store, name, version, force=force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/versions/{version}/artifact", summary="Download the version's artifact as a zip",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "config.json, model.safetensors and card.json"}})
def download_model_artifact(name: ModelName, version: VersionNumber, session: SessionDep, store: StoreDep,
                            principal: CurrentPrincipal) -> StreamingResponse:
    found = get_version(session, name, version, viewer=principal)
    headers = {"Content-Disposition": f'attachment; filename="{name}-{version}.zip"', "ETag": f'"{found.sha256}"'}
    files = store.read_manifest(found.sha256)  # before the answer starts: a missing object is still a 500
    return StreamingResponse(zip_stream(store, files, found.created_at), media_type="application/zip",
                             headers=headers)
