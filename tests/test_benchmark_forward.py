"""benchmarks/forward.py with ``--quick``: every row is there, timed, and equal to eager where it should be.

The full run (128×128, Inductor) takes minutes; the quick one checks that the script still builds the
model, runs every variant (``torch.compile`` through ``aot_eager``), compares it and writes the table.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import forward  # noqa: E402


def _rows(table: str) -> dict[tuple[str, int], list[str]]:
    """The result table's data rows, by (variant, batch), as their remaining cells."""
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in forward.VARIANTS and cells[1].isdigit():
            rows[(cells[0], int(cells[1]))] = cells[2:]
    return rows


def test_the_quick_run_writes_every_row_timed_and_checked(tmp_path, capsys):
    out = tmp_path / "forward.md"
    threads = torch.get_num_threads()
    assert forward.main(["--quick", "--out", str(out)]) == 0
    table = out.read_text(encoding="utf-8")
    assert table.strip() in capsys.readouterr().out
    assert torch.get_num_threads() == threads  # the thread count is restored for the rest of the session

    rows = _rows(table)
    expected = {(name, batch) for name in forward.VARIANTS for batch in forward.QUICK["batches"]}
    assert set(rows) == expected
    for (name, batch), cells in rows.items():
        assert not cells[0].startswith("error"), f"{name} at batch {batch}: {cells[0]}"
        numbers = [float(cell) for cell in cells[:5]]  # ms/call median, min, ms/pair, GFLOP/s, × FLOP limit
        assert all(number > 0 for number in numbers), (name, batch, cells)
        assert numbers[1] <= numbers[0]  # min <= median
        if name == "eager":
            assert cells[5] == "reference"
        elif name != "eager, network only":
            assert float(cells[5]) < 1e-4, f"{name} at batch {batch} differs from eager by {cells[5]}"

    for heading in ("Command:", "Machine:", "**torch.compile**", "**FLOP limit**", "**MONAI**", "## Reading"):
        assert heading in table
    assert "--quick" in table and torch.__version__ in table
