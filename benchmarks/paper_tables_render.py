"""The markdown of ``paper_tables.py``: Tables 1-3, the nuisance split and the paper's numbers.

Only reads what the runner wrote (each finished run's ``run.json`` and ``report.json``, and the
identity floor), so ``--tables-only`` can re-render a matrix without training anything. A missing
run renders as "–"; with several seeds each pair's metric is averaged over the seeds first.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from datetime import datetime, timezone

from adacs_vs_vanilla import fmt
from paper_tables_plan import Data, Run, ablation_archs, machine

from models.data.pairs import PairSample
from models.statistics import PairedTest, mean_std, paired_ttest, paired_ttest_by_subject

# Table 3's rows: method and the scoring objective it trains (none: the vanilla reference).
ABLATION_ROWS = (("none", "vanilla (reference)"), ("adacs-scs-only", "L_scs"), ("adacs-no-tv", "L_scs + α·L_reg"),
                 ("adacs", "L_scs + α·L_reg + L_tv (AdaCS)"))
TESTED = ("dsc", "hd", "asd")  # Table 2's metrics (the paper's)
PAIR_KEYS = ("dsc", "dsc_paper", "hd", "asd", "folding_pct", "epe", "epe_myo")
PAPER_ACDC_DSC = {"voxelmorph": (79.48, 80.50), "transmorph": (76.94, 78.39), "diffusemorph": (67.38, 72.09)}

Results = dict[Run, tuple[dict, dict]]  # the finished runs of the plan: (run.json, report.json)
Found = list[tuple[dict, dict]]  # (run.json, report.json) of the finished seeds of one cell, by seed


def found(results: Results, dataset: str, arch: str, method: str) -> Found:
    """The finished seeds of one (dataset, arch, method) cell, by seed."""
    return sorted((v for r, v in results.items() if (r.dataset, r.arch, r.method) == (dataset, arch, method)),
                  key=lambda pair: pair[0]["seed"])


def seed_averaged(reports: list[dict]) -> list[dict]:
    """Each pair's metrics averaged over the seeds' reports (pairs matched by ``pair_id``)."""
    by_id = [{p["pair_id"]: p for p in report["pairs"]} for report in reports]
    rows = []
    for pair in reports[0]["pairs"]:
        same = [ids[pair["pair_id"]] for ids in by_id if pair["pair_id"] in ids]
        if len(same) == len(reports):
            rows.append({"pair_id": pair["pair_id"], "subject_id": pair["subject_id"],
                         **{k: mean_std([p[k] for p in same])[0] for k in PAIR_KEYS if k in pair}})
    return rows


def cell(rows: list[dict], key: str) -> str:
    """``mean ± std`` of ``key`` over the rows that have it, "–" for none."""
    values = [row[key] for row in rows if key in row]
    return fmt(*mean_std(values)) if values else "–"


def paired(a_rows: list[dict], b_rows: list[dict], key: str) -> tuple[PairedTest, PairedTest]:
    """Tests of ``a`` against ``b`` on their common pairs: per pair, then over per-subject means."""
    b_by_id = {row["pair_id"]: row for row in b_rows}
    common = [row for row in a_rows if key in row and key in b_by_id.get(row["pair_id"], {})]
    x, y = [row[key] for row in common], [b_by_id[row["pair_id"]][key] for row in common]
    subjects = [row["subject_id"] for row in common]
    return paired_ttest(x, y), paired_ttest_by_subject(x, y, subjects)


def common_seed_rows(a: Found, b: Found) -> tuple[list[int], list[dict], list[dict]]:
    """Seed-averaged rows of two cells over the seeds both finished, so a test compares like with like."""
    seeds = sorted({rec["seed"] for rec, _ in a} & {rec["seed"] for rec, _ in b})
    pick = lambda cell_runs: seed_averaged([rep for rec, rep in cell_runs if rec["seed"] in seeds])  # noqa: E731
    return seeds, (pick(a) if seeds else []), (pick(b) if seeds else [])


def _mean(values: list[float], spec: str) -> str:
    """The mean of the values that exist, formatted; "–" when none do (a run from before the field)."""
    values = [v for v in values if v is not None]
    return format(statistics.fmean(values), spec) if values else "–"


def table1(name: str, results: Results, args: argparse.Namespace, identity: dict) -> list[str]:
    """Accuracy of every (arch, method), the identity floor first."""
    epe = "epe_mean" in identity["summary"]
    keys = ("dsc", "dsc_paper", "hd", "asd", "folding_pct") + (("epe", "epe_myo") if epe else ())
    titles = ["DSC %", "DSC % (paper-compatible)", "HD", "ASD", "folding %"] + (["EPE", "EPE myocardium"] * epe)
    lines = ["| arch | method | seeds | " + " | ".join(titles) + " | DSC sd over seeds | train s | "
             "displacement updates | infer ms/pair |", "|---" * (len(titles) + 7) + "|",
             "| – | identity | – | " + " | ".join(cell(identity["pairs"], k) for k in keys) + " | – | 0 | 0 | – |"]
    for arch in args.archs:
        for method in args.methods:
            runs = found(results, name, arch, method)
            if not runs:
                lines.append(f"| {arch} | {method} | 0 | " + " | ".join("–" for _ in keys) + " | – | – | – | – |")
                continue
            rows = seed_averaged([rep for _, rep in runs])
            seed_dsc = [rep["summary"]["dsc_mean"] for _, rep in runs]
            spread = f"{statistics.stdev(seed_dsc):.2f}" if len(seed_dsc) > 1 else "–"
            lines.append(f"| {arch} | {method} | {len(runs)} | " + " | ".join(cell(rows, k) for k in keys)
                         + f" | {spread} | {_mean([rec['train_wall_s'] for rec, _ in runs], '.1f')} | "
                         f"{runs[0][0]['displacement_updates']} | "
                         f"{_mean([rec['inference_ms_per_pair'] for rec, _ in runs], '.1f')} |")
    return lines


def table2(name: str, results: Results, args: argparse.Namespace) -> list[str]:
    """Paired tests of every method against AdaCS, per architecture."""
    if "adacs" not in args.methods:
        return ["AdaCS is not in --methods: no tests against it."]
    header = "".join(f" Δ {k.upper()} | p {k.upper()} (pairs) | p {k.upper()} (subjects) |" for k in TESTED)
    lines = ["| arch | method | seeds | n pairs | n subjects |" + header, "|---" * (5 + 3 * len(TESTED)) + "|"]
    for arch in args.archs:
        adacs = found(results, name, arch, "adacs")
        for method in (m for m in args.methods if m != "adacs"):
            seeds, a_rows, b_rows = common_seed_rows(adacs, found(results, name, arch, method))
            if not seeds:
                lines.append(f"| {arch} | {method} | 0 | – | – |" + " – | – | – |" * len(TESTED))
                continue
            tests = [paired(a_rows, b_rows, key) for key in TESTED]
            lines.append(f"| {arch} | {method} | {len(seeds)} | {tests[0][0].n} | {tests[0][1].n} |" + "".join(
                f" {by_pair.mean_diff:+.2f} | {by_pair.p:.3g} | {by_subject.p:.3g} |" for by_pair, by_subject in tests))
    return lines


def table3(name: str, results: Results, args: argparse.Namespace) -> list[str]:
    """The ablation rows, each tested against AdaCS on the DSC."""
    lines = ["| arch | scoring objective | method | seeds | DSC % | DSC % (paper-compatible) | HD | ASD | folding % | "
             "mean S (last epoch) | Δ DSC (AdaCS − row) | p (pairs) | p (subjects) |", "|---" * 13 + "|"]
    for arch in ablation_archs(args):
        adacs = found(results, name, arch, "adacs")
        for method, objective in ABLATION_ROWS:
            runs = found(results, name, arch, method)
            if not runs:
                lines.append(f"| {arch} | {objective} | {method} | 0 |" + " – |" * 9)
                continue
            rows = seed_averaged([rep for _, rep in runs])
            cells = [cell(rows, k) for k in ("dsc", "dsc_paper", "hd", "asd", "folding_pct")]
            score = _mean([rec["final_score_mean"] for rec, _ in runs], ".3f")
            seeds, a_rows, b_rows = common_seed_rows(adacs, runs)
            test = "– | – | –"
            if seeds and method != "adacs":
                by_pair, by_subject = paired(a_rows, b_rows, "dsc")
                test = f"{by_pair.mean_diff:+.2f} | {by_pair.p:.3g} | {by_subject.p:.3g}"
            lines.append(f"| {arch} | {objective} | {method} | {len(runs)} | " + " | ".join(cells)
                         + f" | {score} | {test} |")
    return lines


def nuisance_groups(tags: dict[str, Sequence[str]]) -> dict[str, set[str]]:
    """Pair ids by known nuisance, from ``{pair_id: tags}`` (``PairSample.tags``, or a report row's
    ``tags``): ``clean``, each tag, and ``any nuisance``."""
    groups: dict[str, set[str]] = {"clean": {pair_id for pair_id, names in tags.items() if not names}}
    for tag in sorted({tag for names in tags.values() for tag in names}):
        groups[tag] = {pair_id for pair_id, names in tags.items() if tag in names}
    groups["any nuisance"] = {pair_id for pair_id, names in tags.items() if names}
    return groups


def nuisance_table(name: str, results: Results, args: argparse.Namespace, pairs: list[PairSample],
                   identity: dict) -> list[str]:
    """DSC split by the nuisances the evaluation pairs carry by construction, and AdaCS against each
    method on the pairs with one: where AdaCS should help, if anywhere."""
    groups = nuisance_groups({p.pair_id: p.tags for p in pairs})
    titles = [f"DSC % {group} (n = {len(ids)})" for group, ids in groups.items()]
    lines = ["| arch | method | seeds | " + " | ".join(titles) + " | Δ DSC any nuisance (AdaCS − row) | p (pairs) |",
             "|---" * (len(titles) + 5) + "|"]

    def split(rows: list[dict]) -> list[str]:
        return [cell([r for r in rows if r["pair_id"] in ids], "dsc") for ids in groups.values()]

    lines.append("| – | identity | – | " + " | ".join(split(identity["pairs"])) + " | – | – |")
    for arch in args.archs:
        adacs = found(results, name, arch, "adacs")
        for method in args.methods:
            runs = found(results, name, arch, method)
            if not runs:
                lines.append(f"| {arch} | {method} | 0 |" + " – |" * (len(titles) + 2))
                continue
            test = "– | –"
            seeds, a_rows, b_rows = common_seed_rows(adacs, runs)
            if seeds and method != "adacs":
                hit = groups["any nuisance"]
                by_pair, _ = paired([r for r in a_rows if r["pair_id"] in hit],
                                    [r for r in b_rows if r["pair_id"] in hit], "dsc")
                test = f"{by_pair.mean_diff:+.2f} | {by_pair.p:.3g}"
            lines.append(f"| {arch} | {method} | {len(runs)} | "
                         + " | ".join(split(seed_averaged([rep for _, rep in runs]))) + f" | {test} |")
    return lines


def paper_table(name: str, results: Results, args: argparse.Namespace) -> list[str]:
    """The SPEC's ACDC numbers beside ours, strict and paper-compatible."""
    lines = ["| arch | paper: vanilla | paper: AdaCS | paper: Δ | ours: vanilla | ours: AdaCS | ours: Δ | "
             "ours, paper-compatible: vanilla | ours, paper-compatible: AdaCS | ours, paper-compatible: Δ |",
             "|---" * 10 + "|"]
    for arch in args.archs:
        paper_vanilla, paper_adacs = PAPER_ACDC_DSC[arch]
        ours = []
        for key in ("dsc", "dsc_paper"):
            means = [_mean([rep["summary"].get(f"{key}_mean") for _, rep in found(results, name, arch, m)], ".2f")
                     for m in ("none", "adacs")]
            delta = f"{float(means[1]) - float(means[0]):+.2f}" if "–" not in means else "–"
            ours += [*means, delta]
        lines.append(f"| {arch} | {paper_vanilla:.2f} | {paper_adacs:.2f} | {paper_adacs - paper_vanilla:+.2f} | "
                     + " | ".join(ours) + " |")
    return lines


def dataset_section(data: Data, results: Results, args: argparse.Namespace, identity: dict) -> list[str]:
    """One dataset's heading, its tables, and the optional ones that apply to it."""
    summary = identity["summary"]
    lines = [f"## {data.name}", "", f"Trained on `{data.train_spec}` ({len(data.train)} pairs); evaluated on "
             f"`{data.eval_spec}` ({summary['n_pairs']} pairs, {summary['n_subjects']} subjects). Distances (HD, "
             f"ASD, EPE) in {summary['distance_unit']}.", "",
             "### Table 1: registration accuracy (mean ± std over pairs)", "", *table1(data.name, results, args,
                                                                                        identity), "",
             "### Table 2: paired two-sided t-tests against AdaCS", "",
             "Δ = AdaCS − method (a positive Δ DSC, a negative Δ HD or ASD favours AdaCS); p per pair and over "
             "per-subject means; n from the DSC test.", "", *table2(data.name, results, args), ""]
    if ablation_archs(args):
        lines += ["### Table 3: ablation of the scoring objective", "",
                  "Mean S: the scoring map's mean over the last epoch (`L_scs` alone should collapse towards 0).",
                  "", *table3(data.name, results, args), ""]
    if any(p.tags for p in data.eval):
        lines += ["### By nuisance: DSC on clean pairs and on pairs with a known nuisance", "",
                  "The phantom knows which pairs lost signal in a blob of one frame (`dropout-moving`: the ED "
                  "frame, `dropout-fixed`: the ES frame), the correspondence failure AdaCS is meant to "
                  "down-weight. Mean ± std over pairs; the test is paired over the pairs with a nuisance.", "",
                  *nuisance_table(data.name, results, args, data.eval, identity), ""]
    if data.name == "acdc":
        lines += ["### Beside the paper's Table 1 (ACDC, DSC %)", "",
                  "The paper's numbers (its test set, its budget, lenient scoring) and ours (SSL4MIS val split).", "",
                  *paper_table(data.name, results, args), ""]
    return lines


def header(args: argparse.Namespace, command: str, n_finished: int, n_planned: int) -> list[str]:
    """Command, date, machine and budget: what a reader needs to reproduce or discount the numbers."""
    w, e, s = args.warmup_epochs, args.epochs, args.steps_per_epoch
    host = machine()
    options = ", ".join(f"{arch}:{key}={json.dumps(value)}" for arch, key, value in args.arch_options)
    return ["# The paper's tables: architectures × methods", "", f"Command: `{command}`", "",
            f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {host['platform']}, "
            f"{host['cpus']} CPUs, torch {host['torch']} ({host['threads']} threads); each run's `run.json` records "
            "its own.", "",
            f"Budget per run: {(w + e) * s} displacement updates of batch {args.batch_size} (warm-up {w} epochs, "
            f"{e} main epochs, {s} updates per epoch); AdaCS and its ablations add {w * s} scoring-only updates "
            f"and one scoring update per alternating update. lr {args.lr} (scoring network "
            f"{args.scoring_lr or args.lr}), λ {args.lam}, α {args.alpha} (AdaCS and its ablations), network sizes: "
            + (f"the SPEC's except {options}." if options else "the SPEC's."),
            "", f"Seeds: {', '.join(map(str, args.seeds))}. With several seeds each pair's metric is averaged over "
            "the seeds first; \"DSC sd over seeds\" is the spread of the seeds' mean DSC.", "",
            "DSC % is the strict score (nearest-neighbour warp of the ED mask), the headline; the paper-compatible "
            "column warps the mask bilinearly and counts every value above 0, as the paper's test script did. "
            "Train s is the training wall time (sum over epochs, resumes included) on a machine shared with "
            "other jobs.", "", f"Finished runs: {n_finished} of {n_planned} planned; \"–\" marks a missing run.", ""]


def render(args: argparse.Namespace, command: str, runs: list[Run], results: Results, data: dict[str, Data],
           identities: dict[str, dict]) -> str:
    """The whole markdown document of the finished runs of the plan."""
    lines = header(args, command, len(results), len(runs))
    for name in args.datasets:
        lines += dataset_section(data[name], results, args, identities[name])
    return "\n".join(lines)

