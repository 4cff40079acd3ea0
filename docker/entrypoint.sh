#!/usr/bin/env bash
# Entry point of both images. The first argument picks the process:
#   api      migrate the database, then serve service.main:app with uvicorn on port 8000
#   worker   migrate the database, then run the Celery worker on WORKER_QUEUES
#   beat     Celery beat: the reaper and retention schedules (one per deployment)
#   migrate  only migrate the database (a one-off: `docker compose run --rm api migrate`)
#   keys     migrate, then manage API keys: `docker compose run --rm api keys create --name me --scope admin`
#            (python -m service.cli_keys; migrating first makes it work on a fresh volume, before any `up`)
#   anything else is run as given, e.g. `adacs --help` or `bash`.
# Every knob is an environment variable; docker/ENVIRONMENT.md lists them.
set -euo pipefail
# Patient images: everything this process creates is its user's alone (service/core/privacy.py).
umask 077

migrate() {
  # Safe at every start and from several containers at once: upgrade_database() holds a
  # database lock for the whole upgrade and does nothing when the schema is at head.
  # Logged to stderr: stdout stays the command's own (`keys create` prints the key alone).
  python - <<'PY'
import sys

from service.core.config import get_settings
from service.db.migrate import upgrade_database

print("adacs: database schema at revision", upgrade_database(get_settings().database_url), file=sys.stderr, flush=True)
PY
}

install_starter() {
  # The bundled starter model (research use only, see its card) becomes `starter@production`
  # unless the registry already has a model of that name. INSTALL_STARTER_MODEL=0 skips it.
  if [ "${INSTALL_STARTER_MODEL:-1}" = "1" ]; then
    python - <<'PY'
from service.core.config import get_settings
from service.starter import install_starter_model

ref = install_starter_model(get_settings())
print("adacs: starter model", f"registered as {ref}" if ref else "already present (or not bundled)", flush=True)
PY
  fi
}

role="${1:-api}"
if [ "$#" -gt 0 ]; then shift; fi

case "$role" in
  api)
    migrate
    install_starter
    # uvicorn reads WEB_CONCURRENCY (processes) and FORWARDED_ALLOW_IPS itself.
    exec uvicorn service.main:app --host 0.0.0.0 --port 8000 --log-level "${LOG_LEVEL:-info}" "$@"
    ;;
  worker)
    migrate
    # The node name celery@<container hostname> is what the health check pings; --task-events
    # lets Flower follow tasks.
    exec celery --app worker.celery_app:app worker \
      --hostname "celery@%h" \
      --queues "${WORKER_QUEUES:-inference,training}" \
      --pool "${WORKER_POOL:-prefork}" \
      --concurrency "${WORKER_CONCURRENCY:-1}" \
      --loglevel "${LOG_LEVEL:-info}" \
      --task-events "$@"
    ;;
  beat)
    # Celery beat: the reaper (ADACS_REAPER_INTERVAL_S) and retention (ADACS_RETENTION_INTERVAL_S),
    # i.e. `celery --app worker.celery_app:app beat`, started from Python so that every task it
    # publishes touches /tmp/celerybeat.sent: the health check (adacs-healthcheck beat) reads its
    # age to tell a beat that sends from one that only runs.
    exec python - --schedule /tmp/celerybeat-schedule --pidfile /tmp/celerybeat.pid \
      --loglevel "${LOG_LEVEL:-info}" "$@" <<'PY'
import sys
from pathlib import Path

from celery.signals import after_task_publish

from worker.celery_app import app

SENT_MARK = Path("/tmp/celerybeat.sent")


@after_task_publish.connect(weak=False)
def _mark_sent(**_):
    SENT_MARK.touch()


app.start(["beat", *sys.argv[1:]])
PY
    ;;
  migrate)
    migrate
    ;;
  keys)
    migrate
    exec python -m service.cli_keys "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
