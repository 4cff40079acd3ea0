"""benchmarks/gpu.py on the CPU with its tiny configuration: every table row is there and the budget adds up.

On a GPU host the same script measures the GPU path (issue 17); here it must at least run end to end.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu  # noqa: E402


def test_the_tiny_run_writes_every_row(tmp_path, capsys):
    out = tmp_path / "gpu.md"
    assert gpu.main(["--device", "cpu", "--tiny", "--no-compile", "--out", str(out)]) == 0
    table = out.read_text(encoding="utf-8")
    assert table.strip() in capsys.readouterr().out
    for case in ("2D 32x32", "3D 16x16x16"):
        for precision in ("fp32", "bf16"):
            for batch in gpu.TINY["batches"]:
                assert f"| {case} | {precision} | off | {batch} |" in table
    for update in ("vanilla", "scoring", "adacs"):
        assert f"| {update} |" in table
    assert "TINY configuration" in table and "The paper's budget" in table


def test_the_budget_is_the_papers_epochs_at_each_phases_rate():
    seconds = {"vanilla": 0.01, "scoring": 0.02, "adacs": 0.05}
    expected = (20 * 100 * 0.01 + 20 * 100 * 0.02 + 300 * 100 * 0.05) / 60
    assert gpu.budget_minutes(seconds) == pytest.approx(expected)


def test_precision_modes_restore_the_backend_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with gpu.precision("tf32", torch.device("cpu")):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with gpu.precision("bf16", torch.device("cpu")):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
