"""Compare two cells of paper_tables work folders, e.g. AdaCS against vanilla trained with another λ.

``paper_tables.py`` tests methods against AdaCS inside one matrix (one set of hyperparameters). A
control often lives in another work folder: this script takes two cell folders
(``WORK/<dataset>/<arch>/<method>``), averages each pair's metrics over the seeds both have
finished, and runs the same paired t-tests, on all pairs and on each nuisance group of the
held-out pairs (phantoms carry ``tags`` in their reports).

    python benchmarks/compare_runs.py A_CELL B_CELL [--label-a A --label-b B] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from paper_tables import cell, nuisance_groups, paired, seed_averaged

METRICS = ("dsc", "hd", "asd")


def finished_reports(folder: Path) -> dict[int, dict]:
    """``{seed: report}`` of the finished seeds (those with both ``run.json`` and ``report.json``)."""
    out = {}
    for seed_dir in sorted(folder.glob("seed*")):
        if (seed_dir / "run.json").is_file() and (seed_dir / "report.json").is_file():
            out[int(seed_dir.name[4:])] = json.loads((seed_dir / "report.json").read_text(encoding="utf-8"))
    return out


def groups(reports: list[dict]) -> dict[str, set[str]]:
    """``all`` pairs, then ``paper_tables.nuisance_groups`` when some pair is tagged.

    Tags are read from whichever report has them: reports written before tags existed have none.
    """
    tags: dict[str, list[str]] = {p["pair_id"]: [] for p in reports[0]["pairs"]}
    for report in reports:
        for p in report["pairs"]:
            if p.get("tags") and p["pair_id"] in tags:
                tags[p["pair_id"]] = p["tags"]
    return {"all": set(tags)} | (nuisance_groups(tags) if any(tags.values()) else {})


def compare(a_dir: Path, b_dir: Path, label_a: str, label_b: str) -> list[str]:
    a, b = finished_reports(a_dir), finished_reports(b_dir)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise SystemExit(f"no seed finished in both {a_dir} and {b_dir}")
    a_rows, b_rows = seed_averaged([a[s] for s in seeds]), seed_averaged([b[s] for s in seeds])
    lines = [f"A = {label_a} (`{a_dir}`), B = {label_b} (`{b_dir}`); seeds {', '.join(map(str, seeds))}, each "
             "pair's metrics averaged over them. Δ = A − B; paired two-sided t-tests over pairs.", "",
             "| pairs | n | DSC % A | DSC % B | " + " | ".join(f"Δ {m.upper()} | p {m.upper()}" for m in METRICS)
             + " |",
             "|---" * (4 + 2 * len(METRICS)) + "|"]
    for name, ids in groups([*a.values(), *b.values()]).items():
        ra = [r for r in a_rows if r["pair_id"] in ids]
        rb = [r for r in b_rows if r["pair_id"] in ids]
        tests = [paired(ra, rb, m)[0] for m in METRICS]
        lines.append(f"| {name} | {tests[0].n} | {cell(ra, 'dsc')} | {cell(rb, 'dsc')} | "
                     + " | ".join(f"{t.mean_diff:+.2f} | {t.p:.3g}" for t in tests) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--label-a", default="A")
    p.add_argument("--label-b", default="B")
    p.add_argument("--title", default="Comparison")
    p.add_argument("--out", type=Path, help="append the table to this markdown file")
    args = p.parse_args(argv)
    shown = sys.argv[1:] if argv is None else argv
    lines = [f"## {args.title}", "", f"Command: `python benchmarks/compare_runs.py {' '.join(shown)}`", "",
             *compare(args.a, args.b, args.label_a, args.label_b), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
