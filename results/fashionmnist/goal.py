"""Issue 16's goal bars, measured on the suite's finished runs (``runs.csv``), written to
``goal.md``; or those of another suite folder given as the argument (the 4000-label runs at
12,000 iterations: ``results/fashionmnist_12000``), written to its own ``goal.md``.
Usage, from the repository root: python results/fashionmnist/goal.py [FOLDER]

Per label count, means over the seeds that every algorithm involved has finished:
- r2d2 at or under pseudolabel, and under supervised by at least half of FixMatch's gain over it;
- r2d2_strong at or under FixMatch;
- r2d2's run at most 0.6 x FixMatch's, in CPU and in wall seconds, from
  ``../fashionmnist_runtime_alone/<num_labels>/runs.csv`` (the configs and code as they are now,
  one run at a time, alone on the machine). The suite's own run times are not compared: its
  r2d2 / r2d2_strong rows were re-run on another machine than the other algorithms' rows, beside
  other work. Another folder's run times are not compared (its runs, too, ran beside other work).
Then, per label count, how good the warm-up's predictions were (the pseudo-label accuracy of R2's
first reprediction, from ``curves/``; with lazy R2 over the rows read since it) against what each
R2-D2 variant ended with.
"""
import os
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from r2d2_plugin.tools.common import mean_pm_std, read_rows, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
ALONE = os.path.join(HERE, "..", "fashionmnist_runtime_alone")
NEEDED = ("r2d2", "r2d2_strong", "fixmatch", "pseudolabel", "supervised")


def read(path: str) -> Dict[int, Dict[str, Dict[int, Dict[str, float]]]]:
    """{num_labels: {algorithm: {seed: row}}} with numeric fields."""
    table: Dict[int, Dict[str, Dict[int, Dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    for row in read_rows(path):
        table[int(row["num_labels"])][row["algorithm"]][int(row["seed"])] = {
            k: float(row[k]) for k in ("error_pct", "cpu_seconds", "train_seconds")}
    return table


def seeds_label(seeds: List[int]) -> str:
    return f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def section(num_labels: int, runs: Dict[str, Dict[int, Dict[str, float]]], folder: str) -> List[str]:
    seeds = sorted(set.intersection(*(set(runs.get(a, {})) for a in NEEDED)))
    if not seeds:
        return [f"### {num_labels} labels", "", "Not every algorithm the bars need has finished a seed yet.", ""]

    def mean(algorithm: str, key: str = "error_pct") -> float:
        return float(np.mean([runs[algorithm][s][key] for s in seeds]))

    r2d2, strong, fixmatch, pseudo, sup = (mean(a) for a in NEEDED)
    half_gain = (sup - fixmatch) / 2
    return [
        f"### {num_labels} labels ({seeds_label(seeds)}: means of test error %)", "",
        "| bar | measured | verdict | how far |", "|---|---|---|---|",
        f"| r2d2 ≤ pseudolabel | {r2d2:.2f} vs {pseudo:.2f} | {verdict(r2d2 <= pseudo)} | {r2d2 - pseudo:+.2f} points |",
        f"| r2d2 ≤ supervised − ½ (supervised − fixmatch) | {r2d2:.2f} vs {sup:.2f} − {half_gain:.2f} = "
        f"{sup - half_gain:.2f} | {verdict(r2d2 <= sup - half_gain)} | {r2d2 - (sup - half_gain):+.2f} points |",
        f"| r2d2_strong ≤ fixmatch | {strong:.2f} vs {fixmatch:.2f} | {verdict(strong <= fixmatch)} | "
        f"{strong - fixmatch:+.2f} points |",
        *(alone_rows(num_labels) if folder == HERE else []), ""]


def timing_rows(runs: Dict[str, Dict[int, Dict[str, float]]], seeds: List[int], where: str) -> List[str]:
    """The 0.6 x FixMatch bar in CPU and wall seconds, means over ``seeds`` of ``runs``."""
    if not seeds:
        return [f"| r2d2 run ≤ 0.6 × fixmatch's ({where}) | no seed where both ran | — | — |"]
    rows = []
    for key, unit in (("cpu_seconds", "CPU s"), ("train_seconds", "wall s")):
        ratio = np.mean([runs["r2d2"][s][key] for s in seeds]) / np.mean([runs["fixmatch"][s][key] for s in seeds])
        rows.append(f"| r2d2 run ≤ 0.6 × fixmatch's ({where}, {unit}, {seeds_label(seeds)}) | {ratio:.2f} × | "
                    f"{verdict(ratio <= 0.6)} | {ratio - 0.6:+.2f} |")
    return rows


def alone_rows(num_labels: int) -> List[str]:
    """The run-time bar from ``ALONE/<num_labels>`` (one run at a time), where it was measured."""
    path = os.path.join(ALONE, str(num_labels), "runs.csv")
    if not os.path.isfile(path):
        return []
    runs = read(path)[num_labels]
    seeds = sorted(set(runs.get("r2d2", {})) & set(runs.get("fixmatch", {})))
    return timing_rows(runs, seeds, f"one at a time, `fashionmnist_runtime_alone/{num_labels}`")


def first_and_last_store_acc(curve: str) -> Tuple[float, float]:
    """Pseudo-label accuracy right after the first reprediction and at the end of a run."""
    rows = [r for r in read_rows(curve) if r["r2d2/pseudo_label_acc"] and float(r["r2d2/repredictions"]) >= 1]
    return float(rows[0]["r2d2/pseudo_label_acc"]), float(rows[-1]["r2d2/pseudo_label_acc"])


def warmup_section(table: Dict[int, Dict[str, Dict[int, Dict[str, float]]]], folder: str) -> List[str]:
    lines = ["### Where R2-D2 works: the warm-up's predictions against the end", "",
             "Means over the seeds each variant and supervised have both finished. Pseudo-label accuracy: "
             "the store's argmax against the pool's true labels (60k rows, the labeled ones included; "
             "with lazy R2, as in these runs, over the rows read since the last reprediction, a random "
             "sample of the pool: a few thousand rows at the first log after it). "
             "Variant − supervised: per-seed differences, mean ± sample std (n − 1).", "",
             "| labels | variant | seeds | pseudo-label acc. after the warm-up | at the end | "
             "final error % | supervised error % | variant − supervised |", "|---|---|---|---|---|---|---|---|"]
    for num_labels in sorted(table, reverse=True):
        runs = table[num_labels]
        for variant in ("r2d2", "r2d2_strong"):
            seeds = sorted(set(runs.get(variant, {})) & set(runs.get("supervised", {})))
            if not seeds:
                continue
            sup = float(np.mean([runs["supervised"][s]["error_pct"] for s in seeds]))
            diff = [runs[variant][s]["error_pct"] - runs["supervised"][s]["error_pct"] for s in seeds]
            accs = np.array([first_and_last_store_acc(os.path.join(
                folder, "curves", f"{variant}_{num_labels}_seed{s}.csv")) for s in seeds])
            err = float(np.mean([runs[variant][s]["error_pct"] for s in seeds]))
            first, last = 100 * accs.mean(axis=0)
            lines.append(f"| {num_labels} | {variant} | {', '.join(map(str, seeds))} | {first:.1f} % | "
                         f"{last:.1f} % | {err:.2f} | {sup:.2f} | {mean_pm_std(diff)} |")
    return lines + [""]


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    folder = os.path.abspath(args[0]) if args else HERE
    command = "python results/fashionmnist/goal.py" + (f" results/{os.path.basename(folder)}" if args else "")
    table = read(os.path.join(folder, "runs.csv"))
    lines = ["# Issue 16's goal bars on the finished runs", "",
             f"Made by `{command}` from `runs.csv`; means over the seeds that "
             "r2d2, r2d2_strong, fixmatch, pseudolabel and supervised have all finished.", ""]
    for num_labels in sorted(table, reverse=True):
        lines += section(num_labels, table[num_labels], folder)
    lines += warmup_section(table, folder)
    write_report(os.path.join(folder, "goal.md"), "\n".join(lines))


if __name__ == "__main__":
    main()
