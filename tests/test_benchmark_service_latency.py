"""``benchmarks/service_latency.py``: run end to end at a tiny budget, then its helpers on known answers.

The run starts ``adacs serve`` as a subprocess, so this test takes about 20 s. It checks that the
written table has the expected rows and that every cell is a positive time, rate or count, and that
the cells agree with each other. It never checks how fast anything is.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "service_latency.py"
QUICK = ["--quick", "--shape-2d", "32,32", "--shape-3d", "16,16,16", "--repeats", "2", "--clients", "1,2",
         "--jobs-per-client", "1", "--torch-threads", "1"]


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(SCRIPT.parent))  # the script imports its siblings service_latency_*
        spec = importlib.util.spec_from_file_location("service_latency", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api(bench):
    """The script's API helpers: the sibling module it imported."""
    return sys.modules["service_latency_client"]


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of every markdown row whose first cell is ``first_cell``."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return [row[1:] for row in rows if row[0] == first_cell]


def numbers(cells: list[str]) -> list[float]:
    return [float(cell) for cell in cells]


def test_quick_run_writes_the_tables(bench, api, tmp_path, capsys):
    out = tmp_path / "service_latency.md"
    assert bench.main([*QUICK, "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert f"Command: `python benchmarks/service_latency.py {' '.join(QUICK)} --out {out}`" in text
    assert "random initial weights" in text and "with 1 intra-op thread here" in text and "OMP_NUM_THREADS=1" in text
    assert "Worker restarts during the run" in text
    assert "## Reading" in text

    for case in ("2D 32×32", "3D 16×16×16"):
        latency, stage_cells = table_rows(text, case)  # the latency table's row, then the stages' row
        forward, forward_min, register, register_min, api_median, api_p90, api_min, api_minus_forward, ratio, lost = (
            numbers(latency))
        assert min(forward_min, register_min, api_min, ratio) > 0 and lost >= 0 and lost == int(lost)
        assert forward >= forward_min and register >= register_min and api_p90 >= api_median >= api_min
        assert api_minus_forward == pytest.approx(api_median - forward, abs=0.15)
        assert ratio == pytest.approx(api_median / forward, rel=0.05, abs=0.06)
        stages = numbers(stage_cells)
        assert len(stages) == len(api.SPLIT) and min(stages) >= 0
        assert stages[-1] == pytest.approx(api_median, abs=0.05)  # `total` is the API's end-to-end time
        assert all(stage <= stages[-1] for stage in stages)
        named = dict(zip(api.SPLIT, stages))
        assert 0 < named["predict"] <= named["register"]  # the worker's forward is a part of its register stage

    for clients in (1, 2):
        (level,) = table_rows(text, str(clients))
        jobs, wall_s, rate, median_ms, p90_ms, queue_ms, lost = numbers(level)
        assert jobs == clients and lost >= 0 and min(wall_s, rate, median_ms, queue_ms) > 0 and p90_ms >= median_ms
        assert rate == pytest.approx(jobs / wall_s, rel=0.05)

    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["benchmark"] == "service_latency" and set(last["jobs_per_s"]) == {"1", "2"}
    assert set(last["latency"]) == {"2D 32×32", "3D 16×16×16"}


@pytest.mark.parametrize(("argv", "flag"), [
    (["--shape-3d", "8,8,8"], "--shape-3d"),
    (["--shape-2d", "64,64,64"], "--shape-2d"),
    (["--server", "http://127.0.0.1:9", "--workers", "2"], "--workers"),
    (["--api-key", "k"], "--api-key"),
    (["--clients", "1,0"], "--clients"),
    (["--repeats", "0"], "--repeats"),
    (["--torch-threads", "0"], "--torch-threads"),
])
def test_bad_flags_are_refused_naming_the_flag(bench, argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_quick_fills_only_what_was_not_given(bench):
    args = bench.parse_args(["--quick", "--repeats", "5"])
    assert args.repeats == 5 and args.shape_2d == (32, 32) and args.clients == (1, 2) and args.workers == 1
    full = bench.parse_args([])
    assert full.shape_2d == (128, 128) and full.shape_3d == (64, 64, 64) and full.clients == (1, 4, 16)


def test_p90_known_answers(bench):
    assert bench.p90([5.0]) == 5.0
    assert bench.p90([float(v) for v in range(10, 0, -1)]) == 9.0  # ceil(0.9 * 10) = 9th smallest
    assert bench.p90([1.0, 2.0, 3.0]) == 3.0


def test_split_of_one_request(api):
    job = {"created_at": "2026-01-01T00:00:00.250000Z", "started_at": "2026-01-01T00:00:00.400000Z",
           "finished_at": "2026-01-01T00:00:01.500000+00:00",
           "timings_s": {"load_model": 0.01, "read_inputs": 0.09, "register": 0.6, "write_outputs": 0.3,
                         "total": 1.0}, "report": {"predict_s": 0.4}}
    sent = api._epoch_s("2026-01-01T00:00:00Z")
    stages = api.split(job, sent, sent + 1.75, sent + 1.8)
    expected = {"upload": 0.25, "queue": 0.15, "load_model": 0.01, "read_inputs": 0.09, "register": 0.6,
                "predict": 0.4, "write_outputs": 0.3, "bookkeeping": 0.1, "respond": 0.25, "download": 0.05,
                "total": 1.8}
    assert list(stages) == list(api.SPLIT)
    assert stages == pytest.approx(expected, abs=1e-6)
