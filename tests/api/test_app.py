"""service/main.py: a lazy, torch-free app whose OpenAPI schema lists every route under a stable operation id."""

import json
import os
import subprocess
import sys
from pathlib import Path

from fastapi.routing import APIRoute

from service.main import create_app

ROOT = Path(__file__).resolve().parents[2]

OPERATIONS = {
    ("GET", "/healthz"): "health-liveness",
    ("GET", "/readyz"): "health-readiness",
    ("GET", "/metrics"): "health-metrics",
    ("GET", "/v1/models"): "models-list_models",
    ("POST", "/v1/models"): "models-upload_model_version",
    ("GET", "/v1/models/{name}"): "models-read_model",
    ("DELETE", "/v1/models/{name}/stages/{stage}"): "models-remove_stage_label",
    ("GET", "/v1/models/{name}/versions/{version}"): "models-read_model_version",
    ("DELETE", "/v1/models/{name}/versions/{version}"): "models-delete_model_version",
    ("POST", "/v1/models/{name}/versions/{version}/promote"): "models-promote_model_version",
    ("GET", "/v1/models/{name}/versions/{version}/artifact"): "models-download_model_artifact",
    ("POST", "/v1/registrations"): "registrations-create_registration",
    ("GET", "/v1/registrations"): "registrations-list_registrations",
    ("GET", "/v1/registrations/{job_id}"): "registrations-read_registration",
    ("DELETE", "/v1/registrations/{job_id}"): "registrations-delete_registration",
    ("GET", "/v1/registrations/{job_id}/displacement"): "registrations-download_displacement",
    ("GET", "/v1/registrations/{job_id}/inverse-displacement"): "registrations-download_inverse_displacement",
    ("GET", "/v1/registrations/{job_id}/jacobian"): "registrations-download_jacobian",
    ("GET", "/v1/registrations/{job_id}/warped-image"): "registrations-download_warped_image",
    ("GET", "/v1/registrations/{job_id}/warped-mask"): "registrations-download_warped_mask",
    ("GET", "/v1/registrations/{job_id}/warped-mask-seg"): "registrations-download_warped_mask_seg",
    ("GET", "/v1/registrations/{job_id}/report"): "registrations-download_report",
    ("GET", "/v1/registrations/{job_id}/preview.png"): "registrations-download_preview",
    ("POST", "/v1/cine-registrations"): "cine-create_cine_registration",
    ("GET", "/v1/cine-registrations"): "cine-list_cine_registrations",
    ("GET", "/v1/cine-registrations/{job_id}"): "cine-read_cine_registration",
    ("DELETE", "/v1/cine-registrations/{job_id}"): "cine-delete_cine_registration",
    ("GET", "/v1/cine-registrations/{job_id}/displacements"): "cine-download_cine_displacements",
    ("GET", "/v1/cine-registrations/{job_id}/warped-masks"): "cine-download_cine_warped_masks",
    ("GET", "/v1/cine-registrations/{job_id}/volumes.csv"): "cine-download_cine_volumes",
    ("GET", "/v1/cine-registrations/{job_id}/volume-curve.png"): "cine-download_cine_volume_curve",
    ("GET", "/v1/cine-registrations/{job_id}/report"): "cine-download_cine_report",
    ("POST", "/v1/datasets"): "datasets-upload_dataset",
    ("GET", "/v1/datasets"): "datasets-list_datasets",
    ("GET", "/v1/datasets/{dataset_id}"): "datasets-read_dataset",
    ("DELETE", "/v1/datasets/{dataset_id}"): "datasets-delete_dataset",
    ("POST", "/v1/training-jobs"): "training-create_training_job",
    ("GET", "/v1/training-jobs"): "training-list_training_jobs",
    ("GET", "/v1/training-jobs/{job_id}"): "training-read_training_job",
    ("POST", "/v1/training-jobs/{job_id}/cancel"): "training-cancel_training_job",
    ("GET", "/v1/training-jobs/{job_id}/events"): "training-training_job_events",
}


def test_openapi_lists_every_route_with_a_stable_operation_id():
    app = create_app()
    schema = app.openapi()
    listed = {(method.upper(), path): op["operationId"] for path, item in schema["paths"].items()
              for method, op in item.items()}
    assert listed == OPERATIONS
    # Every route of the app is in the schema (none hidden with include_in_schema=False).
    served = {(method, route.path) for route in app.routes if isinstance(route, APIRoute) for method in route.methods}
    assert served <= set(listed)
    assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    upload = schema["paths"]["/v1/models"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert set(upload["responses"]) >= {"201", "200", "400", "401", "403", "413", "422"}


def test_the_app_module_imports_no_torch_no_networks_no_worker_and_builds_nothing(tmp_path):
    code = ("import json, sys, service.main as m; m.app.openapi(); "
            "print(json.dumps(sorted(k for k in sys.modules if k == 'torch' or k.startswith(('torch.', "
            "'models.networks', 'models.artifact', 'worker')))))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADACS_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env=env)
    assert json.loads(out.stdout) == []
    # Importing read no settings and opened nothing: no data folder, no database file.
    assert list(tmp_path.iterdir()) == []
