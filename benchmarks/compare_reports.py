"""Compare two ``adacs evaluate`` reports of the same pairs: means and paired two-sided t-tests.

Tests are per pair and over per-subject means (slices of one patient are not independent). The
script measures evaluation variance only: two training runs that differ in seed alone also differ,
so compare a method gap with the gap between two seeds of one method before believing it.

    python benchmarks/compare_reports.py A/report.json B/report.json --names "seed 0" "seed 1" \\
        --out benchmarks/results/vanilla_seed_variance.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from models.statistics import mean_std, paired_ttest, paired_ttest_by_subject

METRICS = ("dsc", "dsc_paper", "hd", "asd", "folding_pct", "epe", "epe_myo")


def compare(a: dict, b: dict, names: tuple[str, str]) -> list[str]:
    rows_a = {p["pair_id"]: p for p in a["pairs"]}
    rows_b = {p["pair_id"]: p for p in b["pairs"]}
    common = sorted(set(rows_a) & set(rows_b))
    if not common:
        raise ValueError("the two reports share no pair_id")
    subjects = [rows_a[k]["subject_id"] for k in common]
    lines = [f"{len(common)} common pairs, {len(set(subjects))} subjects.", "",
             f"| metric | {names[0]} | {names[1]} | mean diff ({names[1]} − {names[0]}) | p (pairs) | "
             "p (subjects) |", "|---|---|---|---|---|---|"]
    for key in METRICS:
        if key not in rows_a[common[0]] or key not in rows_b[common[0]]:
            continue
        x = [rows_a[k][key] for k in common]
        y = [rows_b[k][key] for k in common]
        by_pair, by_subject = paired_ttest(y, x), paired_ttest_by_subject(y, x, subjects)
        (ma, sa), (mb, sb) = mean_std(x), mean_std(y)
        lines.append(f"| {key} | {ma:.2f} ± {sa:.2f} | {mb:.2f} ± {sb:.2f} | {by_pair.mean_diff:+.3f} | "
                     f"{by_pair.p:.3g} | {by_subject.p:.3g} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--names", nargs=2, default=("A", "B"))
    p.add_argument("--title", default="Comparison of two evaluation reports")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    a, b = json.loads(args.a.read_text(encoding="utf-8")), json.loads(args.b.read_text(encoding="utf-8"))
    command = "python benchmarks/compare_reports.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    text = "\n".join([f"# {args.title}", "", f"Command: `{command}`", "",
                      f"- {args.names[0]}: `{args.a}`", f"- {args.names[1]}: `{args.b}`", "",
                      *compare(a, b, tuple(args.names)), ""])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
