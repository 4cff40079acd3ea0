"""Training sets over HTTP: upload a zip in a layout the readers know, list them, delete them.

``POST /v1/datasets`` streams the zip to the dataset's folder in the store, unpacks it with the
safe extractor (no traversal, links, bombs), finds its layout (``models.data.layout``) and reads
every pair once with the same loader a training job will use, so a dataset that cannot train is
refused now, with a 4xx naming the file, instead of failing a job later. A refused upload leaves no
row and no files. The zip itself is not kept (its sha256 is): the unpacked folder is what jobs read.
Reading the pairs happens in the request; for very large sets that takes a while (see README).
A dataset belongs to the key that uploaded it: other keys get 404 (``admin`` keys see all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.data.layout import LAYOUTS, dataset_spec, detect_layout
from models.io.archive import extract_zip, is_zip
from service.access import Principal, may_see, owned_by
from service.api.deps import CurrentPrincipal, SessionDep, SettingsDep, StoreDep, TrainPrincipal
from service.api.errors import ApiError
from service.api.forms import refuse_unknown_form_fields
from service.api.params import Limit, Offset, is_uuid, uuid_path
from service.api.routes import API_V1, error_responses
from service.api.schemas import DatasetPublic, DatasetsPublic
from service.api.staging import all_or_nothing, save_upload
from service.db import Dataset, DatasetLayout, DatasetStatus, Job, JobKind, JobStatus, new_id

__all__ = ["router"]

_ERRORS = error_responses(415)
router = APIRouter(prefix=f"{API_V1}/datasets", tags=["datasets"], responses=_ERRORS,
                   dependencies=[Depends(refuse_unknown_form_fields)])
DatasetId = Annotated[str, uuid_path("dataset")]
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # a label for people: no control characters (nor NUL, which PostgreSQL refuses)
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


def _private(message: str, root: Path) -> str:
    """``message`` with the server's folder taken off every path in it (as given and with links resolved)."""
    for folder in {str(root), str(root.resolve())}:
        message = message.replace(folder + "/", "").replace(folder, ".")
    return message


def _check_pairs(layout: str, root: Path, spec_path: Path) -> dict:
    """Read every pair as a training job will; what was found, or ``InvalidDataset`` naming the problem.

    The read is confined to ``root``, the unpacked upload: a manifest's cells are the uploader's text,
    and without confinement an absolute path or ``..`` would build a dataset out of any server file.
    """
    from models.data.spec import load_pairs

    spec = dataset_spec(layout, spec_path)
    try:
        pairs = load_pairs(spec, root=root)
    except (ValueError, FileNotFoundError, OSError) as error:  # ImageError is a ValueError
        raise InvalidDataset(f"the {layout} dataset cannot be read: {_private(str(error), root)}") from error
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
    session: SessionDep, store: StoreDep, settings: SettingsDep, principal: TrainPrincipal,
    file: Annotated[UploadFile, File(description="zip of an ACDC or CAMUS release folder, or of a manifest CSV "
                                                 "(fixed,moving[,fixed_mask,moving_mask][,id][,subject]) with "
                                                 "its images")],
    name: Annotated[str | None, Form(max_length=255, pattern=PRINTABLE,
                                     description="a label for people (default: the file name)")]
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
                          owner_key_id=principal.key_id)
        session.add(dataset)
        session.commit()
    return _public(dataset)


@router.get("", summary="List datasets, newest first")
def list_datasets(session: SessionDep, principal: CurrentPrincipal, offset: Offset = 0,
                  limit: Limit = 100) -> DatasetsPublic:
    mine = owned_by(principal, Dataset.owner_key_id)
    rows = session.scalars(select(Dataset).where(mine).order_by(Dataset.created_at.desc(), Dataset.id.desc())
                           .offset(offset).limit(limit))
    count = session.scalar(select(func.count(Dataset.id)).where(mine)) or 0
    return DatasetsPublic(data=[_public(d) for d in rows], count=count)


def load_dataset(session: Session, dataset_id: str, principal: Principal) -> Dataset:
    """The dataset, if ``principal`` may see it; 404 otherwise (another key's looks missing)."""
    dataset = session.get(Dataset, dataset_id) if is_uuid(dataset_id) else None
    if dataset is None or not may_see(principal, dataset.owner_key_id):
        raise DatasetNotFound(dataset_id)
    return dataset


@router.get("/{dataset_id}", summary="One dataset: layout, pairs, subjects, shapes")
def read_dataset(dataset_id: DatasetId, session: SessionDep, principal: CurrentPrincipal) -> DatasetPublic:
    return _public(load_dataset(session, dataset_id, principal))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a dataset and its files (refused while a training job uses it)")
def delete_dataset(dataset_id: DatasetId, session: SessionDep, store: StoreDep,
                   principal: TrainPrincipal) -> Response:
    dataset = load_dataset(session, dataset_id, principal)
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
