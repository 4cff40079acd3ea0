"""The service database: tables, engines and sessions, and migrations.

Shared by the API process and the worker; imports neither the web framework nor torch.
"""

from service.db.base import Base, utcnow
from service.db.engine import get_engine, make_engine, make_session_factory, normalize_url, session_scope
from service.db.migrate import current_revision, head_revision, upgrade_database
from service.db.models import (
    ApiKey,
    Dataset,
    DatasetLayout,
    DatasetStatus,
    Job,
    JobKind,
    JobStatus,
    Model,
    ModelVersion,
    StageAssignment,
    new_id,
)

__all__ = [
    "Base", "utcnow", "get_engine", "make_engine", "make_session_factory", "normalize_url", "session_scope",
    "current_revision", "head_revision", "upgrade_database", "ApiKey", "Dataset", "DatasetLayout", "DatasetStatus",
    "Job", "JobKind", "JobStatus", "Model", "ModelVersion", "StageAssignment", "new_id",
]
