#!/usr/bin/env python
"""Health checks of the images' processes: is each one doing its job, not only running?

Installed as ``/usr/local/bin/adacs-healthcheck`` in both images; compose's health checks (and the
worker image's HEALTHCHECK) call it with the process's role. Exit 0 means healthy; otherwise the
last line printed says why (``docker inspect --format '{{json .State.Health}}'`` shows it).

  api      /readyz answers 200: database, broker, artifact store, and a live worker on each queue
           (service.api.readiness); ``api --live`` asks /healthz only (the process answers).
  worker   this container's Celery node answers through the broker and consumes every queue of
           WORKER_QUEUES: a worker that lost its broker, or never subscribed, is not healthy.
  beat     Celery beat published a task (the reaper's or retention's) within two of its shortest
           intervals, plus a grace: a beat whose loop or broker connection is stuck is not healthy.
           The entrypoint's beat touches BEAT_SENT_MARK at every publish (see docker/entrypoint.sh).

Only the standard library, the settings and the Celery app (which imports no torch) are loaded,
so a check costs well under a second of CPU.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BEAT_PID_FILE = Path("/tmp/celerybeat.pid")
BEAT_SENT_MARK = Path("/tmp/celerybeat.sent")  # touched by beat at every published task
BEAT_GRACE_S = 60.0  # a loaded machine may delay a round; two missed rounds and a minute is a stuck beat
API_URL = "http://127.0.0.1:8000"
WORKER_REPLY_S = 10.0


def check_api(live: bool = False) -> str:
    """The API's own probe: /readyz (or /healthz with ``live``) answers 200."""
    path = "/healthz" if live else "/readyz"
    try:
        with urllib.request.urlopen(API_URL + path, timeout=8) as response:
            return f"{path} answered {response.status}"
    except urllib.error.HTTPError as error:  # a 503 carries the failing checks: show them
        raise SystemExit(f"{path} answered {error.code}: {error.read().decode(errors='replace')[:500]}") from None


def check_worker() -> str:
    """This container's node answers ``active_queues`` and consumes every queue it was started on."""
    from worker.celery_app import app

    node = f"celery@{socket.gethostname()}"  # the entrypoint names the node celery@%h
    wanted = {queue for queue in os.environ.get("WORKER_QUEUES", "inference,training").split(",") if queue}
    replies = app.control.inspect(destination=[node], timeout=WORKER_REPLY_S).active_queues() or {}
    if node not in replies:
        raise SystemExit(f"{node} did not answer through the broker within {WORKER_REPLY_S:.0f} s")
    consumed = {queue["name"] for queue in replies[node] or []}
    if wanted - consumed:
        raise SystemExit(f"{node} does not consume {sorted(wanted - consumed)} (it consumes {sorted(consumed)})")
    return f"{node} consumes {', '.join(sorted(consumed))}"


def beat_deadline_s() -> float:
    """How long beat may go without publishing: two rounds of its most frequent schedule, plus a grace."""
    from service.core.config import get_settings

    settings = get_settings()
    return 2 * min(settings.reaper_interval_s, settings.retention_interval_s) + BEAT_GRACE_S


def check_beat(now: float | None = None) -> str:
    """Beat's process is alive and published a task recently (before its first round: started recently)."""
    try:
        pid = int(BEAT_PID_FILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError) as error:
        raise SystemExit(f"no running beat ({BEAT_PID_FILE}: {error})") from None
    now, deadline = time.time() if now is None else now, beat_deadline_s()
    last = BEAT_SENT_MARK if BEAT_SENT_MARK.exists() else BEAT_PID_FILE  # the pid file's age: since start
    age = now - last.stat().st_mtime
    if age > deadline:
        what = "published no task" if last is BEAT_SENT_MARK else "published no task since it started"
        raise SystemExit(f"beat (pid {pid}) {what} for {age:.0f} s (limit {deadline:.0f} s)")
    return f"beat (pid {pid}) published {age:.0f} s ago" if last is BEAT_SENT_MARK else \
        f"beat (pid {pid}) started {age:.0f} s ago, nothing due yet"


def main(argv: list[str]) -> int:
    checks = {"api": lambda: check_api(live="--live" in argv[1:]), "worker": check_worker, "beat": check_beat}
    if not argv or argv[0] not in checks:
        print(f"usage: adacs-healthcheck {{{'|'.join(checks)}}} [--live]", file=sys.stderr)
        return 2
    print(checks[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
