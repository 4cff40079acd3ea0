"""worker/celery_app.py: lazy, torch-free configuration with the delivery guarantees the design relies on."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from service.core.config import Settings
from service.jobs.tasks import FILESYSTEM_POLLING_INTERVAL_S, REAP_TASK, REGISTRATION_TASK, RETENTION_TASK
from worker.celery_app import TASK_MODULES, celery_config, create_app
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import worker.celery_app as m
    configured_at_import = Path(sys.argv[1]).exists()
    conf = m.app.conf
    import worker.tasks.registration
    task = m.app.tasks[sys.argv[2]]
    print(json.dumps({
        "configured_at_import": configured_at_import,
        "heavy": sorted(k for k in ("torch", "models.register", "fastapi", "service.main") if k in sys.modules),
        "broker_url": conf.broker_url,
        "queues": [m.app.amqp.router.route({}, name)["queue"].name for name in (task.name, "adacs.training.run")],
        "task": [task.acks_late, task.reject_on_worker_lost, task.ignore_result, task.max_retries,
                 task.soft_time_limit, task.time_limit, [e.__name__ for e in task.autoretry_for]],
    }))
""")


def test_the_app_is_configured_lazily_without_torch(tmp_path):
    """The health check imports the app every minute: no torch, no models, and settings read on first use."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADACS_")} | {
        "ADACS_DATA_DIR": str(data_dir), "ADACS_REGISTRATION_TIME_LIMIT_S": "100"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(data_dir), REGISTRATION_TASK], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    probe = json.loads(out.stdout)
    assert probe["configured_at_import"] is False and probe["heavy"] == []
    assert probe["broker_url"] == "filesystem://" and (data_dir / "broker" / "queue").is_dir()
    assert probe["queues"] == ["inference", "training"]
    assert probe["task"] == [True, True, True, 5, 90.0, 100,
                             ["OperationalError", "InterfaceError", "TimeoutError"]]


def test_redis_gets_the_visibility_timeout_and_one_message_at_a_time(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/3", visibility_timeout_s=7200,
                        training_time_limit_s=3600)
    conf = create_app(settings).conf
    assert conf.broker_url == "redis://127.0.0.1:6379/3"
    assert conf.broker_transport_options == {"visibility_timeout": 7200}
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost, conf.worker_prefetch_multiplier) == (True, True, 1)
    assert (conf.task_serializer, conf.accept_content, conf.task_ignore_result) == ("json", ["json"], True)
    assert conf.result_backend is None
    assert celery_config(settings, WorkerSettings(max_tasks_per_child=25))["worker_max_tasks_per_child"] == 25
    assert celery_config(settings, WorkerSettings(max_tasks_per_child=0))["worker_max_tasks_per_child"] is None
    assert not (tmp_path / "broker").exists()  # only the filesystem transport needs folders


def test_the_filesystem_broker_polls_its_folder_often(tmp_path):
    conf = create_app(Settings(data_dir=tmp_path)).conf
    options = conf.broker_transport_options
    assert options["polling_interval"] == FILESYSTEM_POLLING_INTERVAL_S == 0.02
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "broker" / "queue")
    assert Path(options["control_folder"]).is_dir()


def test_beat_runs_the_reaper_and_retention_on_their_own_intervals(tmp_path):
    settings = Settings(data_dir=tmp_path, reaper_interval_s=7, retention_interval_s=600, inference_queue="maint")
    schedule = celery_config(settings, WorkerSettings())["beat_schedule"]
    assert schedule["reap-stale-jobs"] == {"task": REAP_TASK, "schedule": 7,
                                           "options": {"queue": "maint", "expires": 7}}
    assert schedule["retention"] == {"task": RETENTION_TASK, "schedule": 600,
                                     "options": {"queue": "maint", "expires": 600}}
    assert "worker.tasks.maintenance" in TASK_MODULES  # a worker knows the task by its name
    assert Settings(data_dir=tmp_path).retention_interval_s == 3600
