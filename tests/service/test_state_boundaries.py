"""The state layer stays torch-free, and agrees with the artifacts that models/ really writes."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_state_modules_import_no_torch_and_no_web_framework():
    code = ("import sys, service.core.config, service.core.security, service.db, service.storage, service.registry; "
            "print(sorted(m for m in ('torch', 'fastapi', 'celery', 'models') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("ndim, enc, dec", [(2, (4,), (4,)), (3, (8, 16, 16), (16, 16, 16, 8, 8))])
def test_tensor_counts_agree_with_every_architecture(ndim, enc, dec):
    from models.networks.estimator import EstimatorConfig
    from models.networks.registry import ARCHITECTURES, build_estimator
    from models.networks.tensor_counts import TENSOR_COUNTS
    from service.registry.artifact_check import expected_tensor_count

    assert set(TENSOR_COUNTS) == set(ARCHITECTURES), "teach models/networks/tensor_counts.py the new architecture"
    for arch in ARCHITECTURES:
        config = EstimatorConfig(arch=arch, ndim=ndim, enc=enc, dec=dec)
        expected = expected_tensor_count({"format": 1, "estimator": config.to_dict()})
        assert expected == len(build_estimator(config).state_dict())


def test_a_saved_artifact_registers_and_loads_back(session, store, tmp_path):
    from models import artifact
    from models.intensity import IntensityConfig
    from models.networks.estimator import EstimatorConfig
    from models.networks.registry import build_estimator
    from service.registry import promote, register_version, resolve
    from service.registry.artifact_check import ARTIFACT_FILES, ARTIFACT_FORMAT

    assert ARTIFACT_FORMAT == artifact.ARTIFACT_FORMAT
    assert ARTIFACT_FILES == {artifact.CONFIG, artifact.WEIGHTS, artifact.CARD}
    config = EstimatorConfig(enc=(4, 4), dec=(4, 4, 4))
    directory = artifact.save_artifact(tmp_path / "model", build_estimator(config), config, IntensityConfig(),
                                       {"method": "adacs"}, train_shape=(32, 32))
    version = register_version(session, store, "starter", directory)
    promote(session, "starter", version.version)
    session.commit()
    loaded = artifact.load_artifact(store.checkout_dir(resolve(session, "starter").sha256))
    assert loaded.config == config and loaded.card == {"method": "adacs"} and loaded.train_shape == (32, 32)
