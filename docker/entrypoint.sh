#!/usr/bin/env bash
# Entry point of both images. The first argument picks the process:
#   api      migrate the database, then serve service.main:app with uvicorn on port 8000
#   worker   migrate the database, then run the Celery worker on WORKER_QUEUES
#   beat     Celery beat: the reaper and retention schedules (one per deployment)
#   migrate  only migrate the database (a one-off: `docker compose run --rm api migrate`)
#   anything else is run as given, e.g. `adacs --help` or `bash`.
# Every knob is an environment variable; docker/ENVIRONMENT.md lists them.
set -euo pipefail
# Patient images: everything this process creates is its user's alone (service/core/privacy.py).
umask 077

migrate() {
  # Safe at every start and from several containers at once: upgrade_database() holds a
  # database lock for the whole upgrade and does nothing when the schema is at head.
  python - <<'PY'
from service.core.config import get_settings
from service.db.migrate import upgrade_database

print("adacs: database schema at revision", upgrade_database(get_settings().database_url), flush=True)
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
      --concurrency "${WORKER_CONCURRENCY:-1}" \
      --loglevel "${LOG_LEVEL:-info}" \
      --task-events "$@"
    ;;
  beat)
    # Celery beat: the reaper (ADACS_REAPER_INTERVAL_S) and retention (ADACS_RETENTION_INTERVAL_S).
    exec celery --app worker.celery_app:app beat \
      --schedule /tmp/celerybeat-schedule --pidfile /tmp/celerybeat.pid \
      --loglevel "${LOG_LEVEL:-info}" "$@"
    ;;
  migrate)
    migrate
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
