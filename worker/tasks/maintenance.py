"""Task ``adacs.maintenance.retention``: Celery beat's round of retention (``service.retention``).

Beat sends it every ``retention_interval_s`` to the inference queue, like the reaper: the deployed
``beat`` service and the worker that ``adacs serve`` starts with ``--beat`` both have it, and any
worker serving that queue runs it (it needs the artifact store, which every worker mounts). The work
itself lives in ``service.retention``, which the API also uses (``DELETE`` of a registration), so
that both remove files by the same rules.
"""

from __future__ import annotations

from service.core.config import get_settings
from service.db import get_engine
from service.jobs.tasks import RETENTION_TASK
from service.retention import run_retention
from service.storage import LocalArtifactStore
from worker.celery_app import app

__all__ = ["retention"]


@app.task(name=RETENTION_TASK, ignore_result=True)
def retention() -> dict[str, int]:
    """Celery beat's entry (see ``beat_schedule`` in ``worker.celery_app``): what the round removed."""
    settings = get_settings()
    engine = get_engine(settings.database_url, settings.db_busy_timeout_ms)
    return run_retention(engine, LocalArtifactStore(settings.artifact_dir), settings).as_dict()
