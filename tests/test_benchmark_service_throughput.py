"""``benchmarks/service_throughput.py``: a tiny run against two embedded servers (solo, then a thread pool
whose registrations batch their forwards). Checks the table's rows and that the cells are consistent
counts, rates and times; never how fast anything is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "service_throughput.py"


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(SCRIPT.parent))  # the script imports its siblings service_latency_*
        spec = importlib.util.spec_from_file_location("service_throughput", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def rows(text: str, first: str) -> list[list[str]]:
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
             if line.startswith("|")]
    return [row[1:] for row in cells if row[0] == first]


def test_quick_run_writes_the_table(bench, tmp_path):
    out = tmp_path / "throughput.md"
    argv = ["--quick", "--configs", "solo:1:preview,threads:2", "--clients", "1,2", "--out", str(out)]
    assert bench.main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert f"Command: `python benchmarks/service_throughput.py {' '.join(argv)}`" in text
    for config in ("solo:1:preview", "threads:2"):
        found = rows(text, config)
        measured, batched = found[:2], found[2]
        assert [int(r[0]) for r in measured] == [1, 2]
        for clients, jobs, wall, rate, median, p90 in ([float(c) for c in r] for r in measured):
            assert jobs == 2 * clients and wall > 0 and median > 0 and p90 >= median
            assert rate == pytest.approx(jobs / wall, rel=0.02)
        assert int(batched[0]) >= 0 and (float(batched[1]) == 0) == (int(batched[0]) == 0)
    assert rows(text, "solo:1:preview")[2] == ["0", "0.0"], "a solo pool runs one registration at a time"


def test_batch_lines_are_counted_from_the_log(bench, tmp_path):
    log = tmp_path / "serve.log"
    log.write_text("x INFO worker.batching: one forward for 3 registrations (3 pairs)\n"
                   "y INFO worker.batching: one forward for 5 registrations (9 pairs)\nother\n", encoding="utf-8")
    assert bench.batches(log) == (2, 4.0)
    log.write_text("nothing batched\n", encoding="utf-8")
    assert bench.batches(log) == (0, 0.0)
