"""``benchmarks/paper_tables.py``: the matrix end to end at a tiny budget, resume, then helpers on known answers.

The matrix (3 architectures × none, adacs, nll, plus the ``L_scs`` ablation on VoxelMorph: 10 runs of
4 displacement updates on 32² phantoms) is run twice: the first invocation is interrupted after the
first epoch of its second run, the second completes it. A third, after one finished run lost its
``run.json``, must train nothing new. About 10 s on a loaded 2-core machine (one torch thread). The
tables are checked for their rows, columns and numbers, never for how good the numbers are.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_tables.py"
ARCHS, METHODS = ("voxelmorph", "transmorph", "diffusemorph"), ("none", "adacs", "nll")
INTERRUPTED = "synthetic/voxelmorph/adacs/seed0"  # the second run of the plan
SIZES = [(arch, size) for arch in ARCHS for size in ("enc=[8,8]", "dec=[8,8,8]")] + \
    [("transmorph", "embed_dim=8"), ("diffusemorph", "features=[8,8]")]  # small networks: the test is about the runner
ARGV = ["--datasets", "synthetic", "--synthetic", "dims=2,size=32,n=8,covisibility=0.3", "--archs", ",".join(ARCHS),
        "--methods", ",".join(METHODS), "--ablation", "adacs-scs-only", "--warmup-epochs", "1", "--epochs", "1",
        "--steps-per-epoch", "2", "--batch-size", "2", "--val-max-pairs", "2", "--eval-max-pairs", "4",
        "--no-pictures", "--threads", "1",  # one thread: two would spin against the other jobs of a shared machine
        *(item for arch, size in SIZES for item in ("--arch-option", f"{arch}:{size}"))]
CELL = re.compile(r"^(-?\d+\.\d\d) ± (\d+\.\d\d)$")


class Interrupted(Exception):
    """Raised from the progress callback, as a cancelled job would."""


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    threads = torch.get_num_threads()  # --threads sets them for the process
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(SCRIPT.parent))  # the script imports its sibling adacs_vs_vanilla
        spec = importlib.util.spec_from_file_location("paper_tables", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, "paper_tables", module)  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return module


def spy_train(bench, mp: pytest.MonkeyPatch, work: Path, interrupt: str | None = None) -> dict[str, list[int]]:
    """Wrap the runner's ``train``: record, per run, the epochs it trained; optionally interrupt one run."""
    calls: dict[str, list[int]] = {}
    real = bench.train

    def wrapper(cfg, pairs, out_dir, **kwargs):
        name, callback = Path(out_dir).relative_to(work).as_posix(), kwargs["callback"]
        calls[name] = []

        def spy(event):
            callback(event)
            if event.kind == "epoch":
                calls[name].append(event.epoch)
                if name == interrupt:
                    raise Interrupted(name)
        return real(cfg, pairs, out_dir, **{**kwargs, "callback": spy})

    mp.setattr(bench, "train", wrapper)
    return calls


def records(work: Path) -> dict[str, tuple[int, str]]:
    """``{run: (mtime_ns, text)}`` of every ``run.json`` under ``work``."""
    return {p.parent.relative_to(work).as_posix(): (p.stat().st_mtime_ns, p.read_text(encoding="utf-8")) for p in
            work.rglob("run.json")}


@pytest.fixture(scope="module")
def matrix(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_tables")
    work, out = root / "work", root / "tables.md"
    argv = [*ARGV, "--work", str(work), "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        first = spy_train(bench, mp, work, interrupt=INTERRUPTED)
        with pytest.raises(Interrupted):
            bench.main(argv)
    after_first = records(work)
    with pytest.MonkeyPatch.context() as mp:
        second = spy_train(bench, mp, work)
        assert bench.main(argv) == 0
    return SimpleNamespace(work=work, out=out, argv=argv, first=first, second=second, after_first=after_first)


def section(text: str, title: str) -> list[list[str]]:
    """The cells of the markdown table under the heading that starts with ``title`` (header row first)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"### {title}"))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def as_dict(rows: list[list[str]], keys: int) -> dict[tuple[str, ...], dict[str, str]]:
    header = rows[0]
    return {tuple(row[:keys]): dict(zip(header, row)) for row in rows[1:]}


def test_interrupted_run_resumes_from_its_checkpoint(matrix):
    assert list(matrix.first) == ["synthetic/voxelmorph/none/seed0", INTERRUPTED]
    assert set(matrix.after_first) == {"synthetic/voxelmorph/none/seed0"}
    assert "synthetic/voxelmorph/none/seed0" not in matrix.second  # finished: not trained again
    assert matrix.second[INTERRUPTED] == [1, 2]  # epoch 0 came from the checkpoint
    assert all(epochs[0] == 0 for name, epochs in matrix.second.items() if name != INTERRUPTED)
    assert len(matrix.second) == 9
    record = json.loads((matrix.work / INTERRUPTED / "run.json").read_text(encoding="utf-8"))
    assert record["resumed_from_epoch"] == 1 and record["finished"]
    assert records(matrix.work)["synthetic/voxelmorph/none/seed0"] == \
        matrix.after_first["synthetic/voxelmorph/none/seed0"]


def test_every_run_records_its_wall_times_and_budget(matrix):
    found = records(matrix.work)
    assert len(found) == 10
    for name, (_, text) in found.items():
        record = json.loads(text)
        assert record["train_wall_s"] > 0 and record["eval_wall_s"] > 0 and record["inference_ms_per_pair"] > 0, name
        assert record["displacement_updates"] == 4, name
        scoring = record["method"].startswith("adacs")
        assert record["updates"] == (6 if scoring else 4), name
        assert (record["final_score_mean"] is not None) == scoring, name
        assert (matrix.work / name / "report.json").is_file()
    vm = json.loads(found["synthetic/voxelmorph/none/seed0"][1])["train_config"]["estimator"]
    tm = json.loads(found["synthetic/transmorph/adacs/seed0"][1])["train_config"]["estimator"]
    assert vm["enc"] == [8, 8] and vm["dec"] == [8, 8, 8] and tm["options"] == {"embed_dim": 8}


def test_table1_has_every_architecture_and_method(matrix):
    text = matrix.out.read_text(encoding="utf-8")
    assert "Finished runs: 10 of 10 planned" in text and "python benchmarks/paper_tables.py" in text
    table = as_dict(section(text, "Table 1"), 2)
    assert set(table) == {("–", "identity")} | {(a, m) for a in ARCHS for m in METHODS}
    for (arch, method), row in table.items():
        for column in ("DSC %", "DSC % (paper-compatible)", "HD", "ASD", "folding %", "EPE", "EPE myocardium"):
            assert CELL.match(row[column]), (arch, method, column, row[column])
        assert 0 <= float(CELL.match(row["DSC %"])[1]) <= 100
        if method != "identity":
            assert row["seeds"] == "1" and row["displacement updates"] == "4" and float(row["train s"]) >= 0
    report = json.loads((matrix.work / "synthetic/transmorph/nll/seed0/report.json").read_text(encoding="utf-8"))
    dsc = [p["dsc"] for p in report["pairs"]]
    mean = sum(dsc) / len(dsc)
    std = math.sqrt(sum((d - mean) ** 2 for d in dsc) / (len(dsc) - 1))
    assert table[("transmorph", "nll")]["DSC %"] == f"{mean:.2f} ± {std:.2f}"


def test_table2_tests_every_method_against_adacs(matrix):
    table = as_dict(section(matrix.out.read_text(encoding="utf-8"), "Table 2"), 2)
    assert set(table) == {(a, m) for a in ARCHS for m in ("none", "nll")}
    for row in table.values():
        assert row["n pairs"] == "4" and row["n subjects"] == "4"
        for metric in ("DSC", "HD", "ASD"):
            float(row[f"Δ {metric}"]), float(row[f"p {metric} (pairs)"]), float(row[f"p {metric} (subjects)"])


def test_table3_lists_the_ablation_with_a_missing_row(matrix):
    rows = section(matrix.out.read_text(encoding="utf-8"), "Table 3")
    table = as_dict(rows, 3)
    assert [key[2] for key in table] == ["none", "adacs-scs-only", "adacs-no-tv", "adacs"]
    assert all(key[0] == "voxelmorph" for key in table)
    missing = table[("voxelmorph", "L_scs + α·L_reg", "adacs-no-tv")]
    assert missing["seeds"] == "0" and set(list(missing.values())[4:]) == {"–"}
    scs = table[("voxelmorph", "L_scs", "adacs-scs-only")]
    assert 0 < float(scs["mean S (last epoch)"]) < 1 and CELL.match(scs["DSC %"])
    float(scs["p (pairs)"]), float(scs["Δ DSC (AdaCS − row)"])


def test_nuisance_table_splits_the_dsc_by_the_pairs_tags(matrix):
    """Held-out pairs 0-3 at covisibility 0.3: two clean, one dropout in each frame."""
    table = as_dict(section(matrix.out.read_text(encoding="utf-8"), "By nuisance"), 2)
    assert set(table) == {("–", "identity")} | {(a, m) for a in ARCHS for m in METHODS}
    report = json.loads((matrix.work / "synthetic/voxelmorph/nll/seed0/report.json").read_text(encoding="utf-8"))
    groups = {"clean": [], "dropout-fixed": [], "dropout-moving": []}
    for pair in report["pairs"]:
        for tag in pair.get("tags", ["clean"]):
            groups[tag].append(pair["dsc"])
    assert [len(v) for v in groups.values()] == [2, 1, 1]
    row = table[("voxelmorph", "nll")]
    for group, dsc in groups.items():
        mean = sum(dsc) / len(dsc)
        assert row[f"DSC % {group} (n = {len(dsc)})"].startswith(f"{mean:.2f} ± "), (group, row)
    any_hit = groups["dropout-fixed"] + groups["dropout-moving"]
    assert row["DSC % any nuisance (n = 2)"].startswith(f"{sum(any_hit) / 2:.2f} ± ")
    float(row["Δ DSC any nuisance (AdaCS − row)"]), float(row["p (pairs)"])
    assert table[("voxelmorph", "adacs")]["p (pairs)"] == "–"


def test_nuisance_groups_on_known_tags(bench):
    image = np.zeros((4, 4), np.float32)
    pairs = [bench.PairSample(image, image, f"p{i}", f"p{i}", tags=tags)
             for i, tags in enumerate([(), ("a",), ("a", "b"), ()])]
    assert bench.nuisance_groups({p.pair_id: p.tags for p in pairs}) == {
        "clean": {"p0", "p3"}, "a": {"p1", "p2"}, "b": {"p2"}, "any nuisance": {"p1", "p2"}}


def test_score_by_structure_reads_the_scoring_network_of_a_run(matrix, tmp_path):
    spec = importlib.util.spec_from_file_location("score_by_structure", SCRIPT.parent / "score_by_structure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "scores.md"
    assert module.main([str(matrix.work / "synthetic/voxelmorph/adacs/seed0"), "--max-pairs", "4",
                        "--out", str(out)]) == 0
    text = "\n".join(line for line in out.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
    table = as_dict(section("### scores\n" + text, "scores"), 4)
    row = table[("synthetic", "voxelmorph", "–", "adacs")]
    regions = ("background", "blood pool", "myocardium", "dropout blob (fixed frame)", "heart outside the blob")
    assert all(0 < float(row[f"mean S: {region}"]) < 1 for region in regions), row
    with pytest.raises(SystemExit, match="no checkpoint with a scoring network"):
        module.main([str(matrix.work / "synthetic/voxelmorph/none/seed0")])


def test_rerun_trains_nothing_new_and_completes_a_lost_record(bench, matrix):
    lost = "synthetic/transmorph/nll/seed0"
    (matrix.work / lost / "run.json").unlink()
    before = records(matrix.work)
    with pytest.MonkeyPatch.context() as mp:
        calls = spy_train(bench, mp, matrix.work)
        assert bench.main(matrix.argv) == 0
    assert calls == {lost: []}  # the trainer found the finished checkpoint: no epoch trained
    after = records(matrix.work)
    assert {k: v for k, v in after.items() if k != lost} == before
    assert json.loads(after[lost][1])["resumed_from_epoch"] == 2
    assert "Finished runs: 10 of 10 planned" in matrix.out.read_text(encoding="utf-8")


def test_estimate_projects_the_budget_and_trains_no_run(bench, tmp_path, capsys):
    argv = ["--datasets", "synthetic", "--synthetic", "dims=2,size=32,n=8", "--archs", "voxelmorph", "--methods",
            "none,adacs", "--ablation", "", "--warmup-epochs", "2", "--epochs", "3", "--steps-per-epoch", "10",
            "--batch-size", "2", "--estimate", "--estimate-updates", "2", "--work", str(tmp_path / "work")]
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {row["method"]: row for row in result["estimate"]}
    assert set(rows["none"]["s_per_update"]) == {"displacement"}
    assert set(rows["adacs"]["s_per_update"]) == {"warmup-displacement", "warmup-scoring", "alternating"}
    rates = rows["adacs"]["s_per_update"]
    expected = (20 * rates["warmup-displacement"] + 20 * rates["warmup-scoring"] + 30 * rates["alternating"]) / 3600
    assert rows["adacs"]["hours_per_seed"] == pytest.approx(expected)
    assert result["hours"] == pytest.approx(rows["none"]["hours_per_seed"] + expected) and result["hours"] > 0
    assert not (tmp_path / "work").exists()


def test_seed_averaging_and_paired_tests_on_known_answers(bench):
    def report(dsc):
        return {"pairs": [{"pair_id": f"p{i}", "subject_id": f"s{i // 2}", "dsc": d} for i, d in enumerate(dsc)]}

    rows = bench.seed_averaged([report([70, 80, 90, 60]), report([80, 80, 70, 62])])
    assert [row["dsc"] for row in rows] == [75, 80, 80, 61]
    assert bench.cell(rows, "dsc") == "74.00 ± 8.98"
    by_pair, by_subject = bench.paired(rows, bench.seed_averaged([report([74, 78, 77, 60])]), "dsc")
    assert by_pair.mean_diff == pytest.approx(1.75) and by_pair.n == 4 and by_subject.n == 2
    assert by_pair.p == pytest.approx(0.03535, abs=1e-5)  # scipy.stats.ttest_rel([75,80,80,61], [74,78,77,60])


def test_acdc_without_its_folder_is_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--datasets", "acdc"])
    assert "--acdc" in capsys.readouterr().err


def test_tables_only_renders_the_finished_runs_and_trains_nothing(bench, matrix, tmp_path):
    out = tmp_path / "again.md"
    argv = [*matrix.argv[:-1], str(out), "--tables-only"]
    with pytest.MonkeyPatch.context() as mp:
        calls = spy_train(bench, mp, matrix.work)
        assert bench.main(argv) == 0
    assert calls == {}
    text = out.read_text(encoding="utf-8")
    assert "--tables-only" not in text and section(text, "Table 1") == section(matrix.out.read_text(
        encoding="utf-8"), "Table 1")


def test_weights_reach_every_methods_config(bench):
    """λ applies to every method; α only to those with a scoring network (the others keep the default)."""
    args = bench.parse_args(["--datasets", "synthetic", "--lam", "0.05", "--alpha", "0.1"])
    for method, alpha in (("none", bench.TrainConfig.alpha), ("nll", bench.TrainConfig.alpha), ("adacs", 0.1)):
        cfg = bench.train_config(args, bench.Run("synthetic", "voxelmorph", method, 0), 2)
        assert (cfg.lam, cfg.alpha) == (0.05, alpha)
    assert bench.parse_args(["--datasets", "synthetic"]).lam == bench.TrainConfig.lam == 0.01


def test_compare_runs_tests_two_cells_overall_and_by_nuisance(matrix, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT.parent / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cells = [str(matrix.work / "synthetic/voxelmorph" / method) for method in ("adacs", "none")]
    out = tmp_path / "controls.md"
    assert module.main([*cells, "--out", str(out)]) == 0
    text = "\n".join(line for line in out.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
    table = as_dict(section("### c\n" + text, "c"), 1)
    assert {k[0]: v["n"] for k, v in table.items()} == {"all": "4", "clean": "2", "dropout-fixed": "1",
                                                        "dropout-moving": "1", "any nuisance": "2"}
    reports = [json.loads((Path(c) / "seed0/report.json").read_text(encoding="utf-8")) for c in cells]
    delta = sum(a["dsc"] - b["dsc"] for a, b in zip(*(r["pairs"] for r in reports))) / 4
    assert table[("all",)]["Δ DSC"] == f"{delta:+.2f}"
    with pytest.raises(SystemExit, match="no seed finished in both"):
        module.main([cells[0], str(tmp_path)])
