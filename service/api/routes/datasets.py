"""Training sets over HTTP: upload a zip in a layout the readers know, list them, delete them.

``POST /v1/datasets`` streams the zip to the dataset's folder in the store, unpacks it with the
safe extractor (no traversal, links, bombs), finds its layout (``models.data.detect``) and reads
every pair once with the same loader a training job will use, so a dataset that cannot train is
refused now, with a 4xx naming the file, instead of failing a job later. A refused upload leaves no
row and no files. The zip itself is not kept (its sha256 is): the unpacked folder is what jobs read.
Reading the pairs happens in the request; for very large sets that takes a while (see README).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi import Path as PathParam
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.data.detect import LAYOUTS, dataset_spec, detect_layout
from models.io.archive import extract_zip, is_zip
from service.api.deps import CurrentKey, SessionDep, SettingsDep, StoreDep, TrainKey
from service.api.errors import ApiError
from service.api.routes import API_V1
from service.api.schemas import DatasetPublic, DatasetsPublic, ErrorPublic
from service.api.staging import all_or_nothing, save_upload
from service.db import Dataset, DatasetLayout, DatasetStatus, Job, JobKind, JobStatus, new_id

__all__ = ["router"]

_ERRORS = {code: {"model": ErrorPublic} for code in (400, 401, 403, 404, 409, 413, 415, 422)}
router = APIRouter(prefix=f"{API_V1}/datasets", tags=["datasets"], responses=_ERRORS)
DatasetId = Annotated[str, PathParam(description="the dataset's id (a UUID)")]
MAX_MEMBERS = 200_000  # ACDC's 150 patients are ~1000 files; CAMUS' 500 about 10000
SHOWN_SHAPES = 5


class DatasetNotFound(ApiError):
    def __init__(self, dataset_id: str) -> None:
        super().__init__(404, f"no dataset with id {dataset_id!r}; list them with GET {API_V1}/datasets", "not_found")


class InvalidDataset(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(422, detail, "invalid_dataset")


def _public(dataset: Dataset) -> DatasetPublic:
    info = dataset.info or {}
    return DatasetPublic(
        id=dataset.id, name=dataset.name, layout=dataset.layout.value, status=dataset.status.value,
        error=dataset.error, n_pairs=dataset.n_pairs, n_subjects=info.get("n_subjects"),
        n_labelled=info.get("n_labelled"), ndim=info.get("ndim"), shapes=info.get("shapes", []),
        sha256=dataset.sha256, size_bytes=dataset.size_bytes, created_at=dataset.created_at,
        url=f"{API_V1}/datasets/{dataset.id}")


def _check_pairs(layout: str, root, spec_path) -> dict:
    """Read every pair as a training job will; what was found, or ``InvalidDataset`` naming the problem."""
    from models.data.spec import load_pairs

    spec = dataset_spec(layout, spec_path)
    try:
        pairs = load_pairs(spec)
    except (ValueError, FileNotFoundError, OSError) as error:  # ImageError is a ValueError
        raise InvalidDataset(f"the {layout} dataset cannot be read: "
                             f"{str(error).replace(str(root) + '/', '')}") from error
    if not pairs:
        raise InvalidDataset(f"the {layout} dataset holds no usable pair (for acdc: no slice with myocardium in "
                             "both frames)")
    shapes = sorted({tuple(p.shape) for p in pairs})
    return {"n_pairs": len(pairs), "n_subjects": len({p.subject_id for p in pairs}),
            "n_labelled": sum(p.moving_mask is not None and p.fixed_mask is not None for p in pairs),
            "ndim": pairs[0].ndim, "shapes": [list(s) for s in shapes[:SHOWN_SHAPES]], "n_shapes": len(shapes)}


@router.post("", status_code=status.HTTP_201_CREATED, summary="Upload a training set (zip) in a supported layout",
             responses={201: {"description": "checked and ready to train on"}})
def upload_dataset(
    session: SessionDep, store: StoreDep, settings: SettingsDep, key: TrainKey,
    file: Annotated[UploadFile, File(description="zip of an ACDC or CAMUS release folder, or of a manifest CSV "
                                                 "(fixed,moving[,fixed_mask,moving_mask][,id][,subject]) with "
                                                 "its images")],
    name: Annotated[str | None, Form(max_length=255, description="a label for people (default: the file name)")]
    = None,
    layout: Annotated[str | None, Form(description=f"one of {', '.join(LAYOUTS)}; default: detected")] = None,
) -> DatasetPublic:
    if layout is not None and layout not in LAYOUTS:
        raise ApiError(422, f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)} (or leave it out to detect it)",
                       "invalid_layout")
    dataset_id = new_id()
    with all_or_nothing(session, store.dataset_dir(dataset_id)) as folder:
        archive = folder / "upload.zip"
        sha, size = save_upload(file, archive, settings.max_dataset_bytes)
        with open(archive, "rb") as handle:
            if not is_zip(handle.read(4)):
                raise ApiError(415, f"{file.filename or 'the upload'} is not a zip archive; zip the dataset folder "
                                    "(e.g. 'zip -r data.zip ACDC/')", "not_a_zip")
        extract_zip(archive, folder, max_members=MAX_MEMBERS, max_total_bytes=4 * settings.max_dataset_bytes,
                    name="files")
        archive.unlink()
        root = folder / "files"
        try:
            detected = detect_layout(root, layout)
        except ValueError as error:
            raise InvalidDataset(str(error)) from error
        info = _check_pairs(detected.layout, root, detected.path)
        info |= {"layout": detected.layout, "path": detected.relative_to(folder)}
        dataset = Dataset(id=dataset_id, name=name or file.filename or dataset_id,
                          layout=DatasetLayout(detected.layout), status=DatasetStatus.READY, sha256=sha,
                          size_bytes=size, n_pairs=info["n_pairs"], storage_key=f"datasets/{dataset_id}", info=info,
                          owner_key_id=key.id if key is not None else None)
        session.add(dataset)
        session.commit()
    return _public(dataset)


@router.get("", summary="List datasets, newest first")
def list_datasets(session: SessionDep, _key: CurrentKey, offset: Annotated[int, Query(ge=0)] = 0,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DatasetsPublic:
    rows = session.scalars(select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id.desc())
                           .offset(offset).limit(limit))
    return DatasetsPublic(data=[_public(d) for d in rows], count=session.scalar(select(func.count(Dataset.id))) or 0)


def load_dataset(session: Session, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise DatasetNotFound(dataset_id)
    return dataset


@router.get("/{dataset_id}", summary="One dataset: layout, pairs, subjects, shapes")
def read_dataset(dataset_id: DatasetId, session: SessionDep, _key: CurrentKey) -> DatasetPublic:
    return _public(load_dataset(session, dataset_id))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a dataset and its files (refused while a training job uses it)")
def delete_dataset(dataset_id: DatasetId, session: SessionDep, store: StoreDep,
                   _key: TrainKey) -> Response:
    dataset = load_dataset(session, dataset_id)
    active = session.scalars(select(Job.id).where(Job.kind == JobKind.TRAINING,
                                                  Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))).all()
    users = [job_id for job_id in active
             if (session.get(Job, job_id).params or {}).get("dataset_id") == dataset_id]
    if users:
        raise ApiError(409, f"dataset {dataset_id} is used by training job(s) {', '.join(users)} that have not "
                            "finished; cancel them first", "dataset_in_use")
    session.delete(dataset)
    session.commit()
    store.remove_dataset_dir(dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
