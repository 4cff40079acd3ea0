"""``adacs serve``: the embedded default (DESIGN "Two ways to run") in one foreground command.

With no configuration everything lives under the data folder: SQLite (``adacs.db``), the artifact
store (``artifacts/``) and kombu's filesystem broker (``broker/``), so nothing has to be installed
or started besides this command. :func:`serve`

1. exports ``ADACS_DATA_DIR`` (other ``ADACS_*`` variables the user set are kept), so the API in
   this process and the worker subprocess read the same :class:`~service.core.config.Settings`;
2. migrates the database once (:func:`~service.db.migrate.upgrade_database`);
3. starts one Celery worker subprocess on the ``inference`` and ``training`` queues (``--pool solo``
   for one worker, prefork with ``--concurrency N`` for more), with Celery beat embedded for the
   reaper of stale and lost jobs and for retention, and writes its pid to ``DATA_DIR/worker.pid``;
4. serves the API with uvicorn in the foreground until SIGINT or SIGTERM, then stops the worker:
   SIGTERM (Celery's warm shutdown), a wait, then SIGKILL to its whole process group.

Worker crashes: a supervisor thread restarts a worker that exits on its own, after a backoff that
doubles up to 30 s. A worker that dies :data:`MAX_QUICK_FAILURES` times in a row within
:data:`QUICK_FAILURE_S` of its start (a broken install, say) is given up on: serve then stops the
API and exits with status 1 rather than loop for ever.

The worker runs in a session of its own, so a terminal's Ctrl-C reaches only serve, which then
stops the worker in order (no double signal turning Celery's warm shutdown into a cold one).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["serve", "worker_command", "WorkerSupervisor", "WORKER_PID_FILE"]

log = logging.getLogger("adacs.serve")

WORKER_PID_FILE = "worker.pid"
POOLS = (None, "solo", "prefork", "threads")
QUEUES = ("inference", "training")  # the defaults of ADACS_INFERENCE_QUEUE and ADACS_TRAINING_QUEUE (settings)
STOP_TIMEOUT_S = 15.0
MAX_BACKOFF_S = 30.0
QUICK_FAILURE_S = 30.0
MAX_QUICK_FAILURES = 5


def worker_command(workers: int = 1, hostname: str = "adacs-serve@%h", beat_schedule: Path | None = None,
                   queues: Sequence[str] = QUEUES, pool: str | None = None) -> list[str]:
    """The Celery worker command line: ``--pool solo`` for one worker, prefork for more, or ``pool``.

    ``pool="threads"`` runs ``workers`` jobs as threads of one process, whose registrations share
    their network forwards (``worker.batching``): the choice for a GPU, which one process owns.

    With ``beat_schedule`` (a file) the worker also runs Celery beat, whose schedules are the reaper
    (``worker.reaper``) and retention (``service.retention``): one process fewer than the deployed
    setup's separate ``beat`` service.
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if pool not in POOLS:
        raise ValueError(f"--pool must be one of {', '.join(p for p in POOLS if p)}, got {pool!r}")
    pool = pool or ("solo" if workers == 1 else "prefork")
    return [sys.executable, "-m", "celery", "--app", "worker.celery_app:app", "worker",
            "--queues", ",".join(queues), "--pool", pool, "--concurrency", str(workers), "--hostname", hostname,
            "--loglevel", "INFO",            "--without-gossip", "--without-mingle", "--without-heartbeat",
            *(["--beat", "--schedule", str(beat_schedule)] if beat_schedule is not None else [])]


class WorkerSupervisor:
    """Runs ``command`` as a child process and keeps it running until :meth:`stop`.

    A child that exits on its own is restarted after a backoff (1 s, doubling up to
    ``max_backoff_s``; reset once a child has lived ``quick_failure_s``). After ``max_quick_failures``
    children in a row each died within ``quick_failure_s``, the supervisor gives up and calls
    ``on_give_up``. ``pid_file``, when given, always holds the current child's pid.
    """

    def __init__(self, command: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 pid_file: Path | None = None, on_give_up: Callable[[], None] | None = None,
                 stop_timeout_s: float = STOP_TIMEOUT_S, max_backoff_s: float = MAX_BACKOFF_S,
                 quick_failure_s: float = QUICK_FAILURE_S, max_quick_failures: int = MAX_QUICK_FAILURES,
                 poll_s: float = 0.2) -> None:
        self.command, self.env, self.cwd, self.pid_file = list(command), env, cwd, pid_file
        self.on_give_up = on_give_up
        self.stop_timeout_s, self.max_backoff_s = stop_timeout_s, max_backoff_s
        self.quick_failure_s, self.max_quick_failures, self.poll_s = quick_failure_s, max_quick_failures, poll_s
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.gave_up = False
        self._started_at = 0.0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        process = self.process
        return None if process is None else process.pid

    def start(self) -> None:
        """Start the child and the thread that watches it."""
        with self._lock:
            self._spawn()
        self._thread = threading.Thread(target=self._watch, name="adacs-worker-supervisor", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        # A session of its own: the terminal's Ctrl-C reaches serve only, and the worker's pool
        # processes share its process group, which stop() can kill as one.
        self.process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, start_new_session=True)
        self._started_at = time.monotonic()
        if self.pid_file is not None:
            tmp = self.pid_file.with_name(self.pid_file.name + ".tmp")
            tmp.write_text(f"{self.process.pid}\n", encoding="utf-8")
            tmp.replace(self.pid_file)
        log.info("worker started (pid %d)", self.process.pid)

    def _watch(self) -> None:
        backoff, quick_failures = 1.0, 0
        while not self._stopping.wait(self.poll_s):
            process = self.process
            if process is None or process.poll() is None:
                continue
            lived = time.monotonic() - self._started_at
            quick_failures = quick_failures + 1 if lived < self.quick_failure_s else 1
            if lived >= self.quick_failure_s:
                backoff = 1.0
            if quick_failures >= self.max_quick_failures:
                log.error("worker (pid %d) exited with status %s; %d quick failures in a row, giving up",
                          process.pid, process.returncode, quick_failures)
                self.gave_up = True
                if self.on_give_up is not None:
                    self.on_give_up()
                return
            log.warning("worker (pid %d) exited with status %s after %.1f s; restarting in %.0f s",
                        process.pid, process.returncode, lived, backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(2 * backoff, self.max_backoff_s)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()
                self.restarts += 1

    def stop(self) -> int | None:
        """Stop watching, then stop the child: SIGTERM, wait ``stop_timeout_s``, SIGKILL its process
        group. Returns the child's exit status (None when none was started)."""
        self._stopping.set()
        with self._lock:
            process = self.process
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.poll_s + 5)
        if process is None:
            return None
        if process.poll() is None:
            log.info("stopping worker (pid %d)", process.pid)
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("worker (pid %d) did not stop within %.0f s; killing it", process.pid,
                            self.stop_timeout_s)
        _kill_group(process.pid)  # pool children left behind by a worker that was killed, if any
        if process.poll() is None:
            process.kill()
        returncode = process.wait()
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
        return returncode


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def serve(host: str = "127.0.0.1", port: int = 8000, data_dir: Path | None = None, workers: int = 1,
          log_level: str = "info", pool: str | None = None) -> int:
    """Run the embedded service in the foreground; returns the exit status (0 after SIGINT/SIGTERM)."""
    import uvicorn

    from service.core.config import get_settings
    from service.core.privacy import use_private_umask
    from service.db.migrate import upgrade_database
    from service.main import create_app
    from service.starter import install_starter_model

    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    use_private_umask()  # before anything is created: the worker inherits it (service.core.privacy)
    if data_dir is not None:
        os.environ["ADACS_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())
    get_settings.cache_clear()
    settings = get_settings()
    os.environ["ADACS_DATA_DIR"] = str(settings.data_dir)  # absolute: the worker must agree whatever its cwd
    settings.ensure_directories()
    upgrade_database(settings.database_url)
    starter = install_starter_model(settings)
    if starter:
        print(f"registered the bundled starter model as {starter} (research use only; see its card)", flush=True)

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_level=log_level))
    command = worker_command(workers, beat_schedule=settings.data_dir / "celerybeat-schedule",
                             queues=(settings.inference_queue, settings.training_queue), pool=pool)
    supervisor = WorkerSupervisor(command, env=env, cwd=root,
                                  pid_file=settings.data_dir / WORKER_PID_FILE,
                                  on_give_up=lambda: setattr(server, "should_exit", True))

    # uvicorn catches SIGINT/SIGTERM while it runs and raises them again once it has shut down,
    # with the handlers it found restored: these record the signal so the cleanup below runs.
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _frame: received.append(s))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    supervisor.start()
    print(f"AdaCS serving on http://{host}:{port}  (data: {settings.data_dir}, database: {settings.database_url}, "
          f"broker: {settings.broker_url}, worker pid {supervisor.pid}); open http://{host}:{port}/ in a browser "
          f"for the viewer, /docs for the API", flush=True)
    try:
        server.run()
    finally:
        supervisor.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if supervisor.gave_up:
        print("adacs serve: the worker kept dying; stopped", file=sys.stderr)
        return 1
    if not received and not server.started:
        return 1  # uvicorn could not start (e.g. the port is taken)
    return 0
