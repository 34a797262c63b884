"""Faithful r2d2 (``configs/r2d2_fashionmnist_4000.yaml``) against supervised training and FixMatch on
the validation split at 4000 labels, seeds 0-2, at the config's budget (3,000 iterations:
``pool50k_4000_ft0_lr/`` for r2d2, ``pool50k_4000/`` for supervised and FixMatch) and at four times it
(12,000 iterations, every R2-D2 stage × 4: ``budget_4000_12000/faithful/`` for r2d2 and supervised,
``budget_4000_12000/fixmatch/``), seed by seed (issue 16). Each folder's ``COMMAND`` makes it.

The rule, fixed before the 12,000-iteration r2d2 and supervised runs finished: at 12,000 iterations
r2d2 meets the issue's 4000-label bar on validation if its mean error is at or under supervised's
mean − ½ (supervised's mean − FixMatch's mean), and separates from supervised training if it is
under supervised on every one of the 3 seeds. Writes ``budget_faithful.md`` here.
Usage, from the repository root: python results/fashionmnist_val/budget_faithful.py
"""
import os
from typing import Dict, List, Optional

import numpy as np

from r2d2_plugin.tools.common import join_sections, mean_pm_std, write_report
from warmup_gap import HERE, cell, diff, error

LABELS = 4000
SEEDS = range(3)
ALGORITHMS = ("supervised", "fixmatch", "r2d2")
FOLDERS = {"3,000": {"supervised": "pool50k_4000", "fixmatch": "pool50k_4000", "r2d2": "pool50k_4000_ft0_lr"},
           "12,000": {"supervised": "budget_4000_12000/faithful", "fixmatch": "budget_4000_12000/fixmatch",
                      "r2d2": "budget_4000_12000/faithful"}}


def section(budget: str, folders: Dict[str, str]) -> List[str]:
    """The per-seed table at one budget and the rule's two verdicts."""
    lines = [f"## {budget} iterations", "", "| seed | supervised | FixMatch | r2d2 | r2d2 − supervised |",
             "|---" * 5 + "|"]
    errors: Dict[str, List[float]] = {algorithm: [] for algorithm in ALGORITHMS}
    for seed in SEEDS:
        err: Dict[str, Optional[float]] = {a: error(folders[a], a, seed, LABELS) for a in ALGORITHMS}
        if None not in err.values():
            for algorithm, value in err.items():
                errors[algorithm].append(value)
        lines.append("| " + " | ".join([str(seed)] + [cell(err[a]) for a in ALGORITHMS]
                                       + [cell(diff(err["r2d2"], err["supervised"]))]) + " |")
    n = len(errors["r2d2"])
    if n < len(SEEDS):
        return lines + ["", f"{n} of {len(SEEDS)} seeds have every run: undecided."]
    sup, fixmatch, r2d2 = (float(np.mean(errors[a])) for a in ALGORITHMS)
    bar = sup - (sup - fixmatch) / 2
    under = sum(r < s for r, s in zip(errors["r2d2"], errors["supervised"]))
    gaps = [r - s for r, s in zip(errors["r2d2"], errors["supervised"])]
    return lines + ["", "Error % (mean ± sample std over the seeds, n − 1): "
                    + ", ".join(f"{a} {mean_pm_std(errors[a])}" for a in ALGORITHMS)
                    + f"; r2d2 − supervised (per-seed differences) {mean_pm_std(gaps)} points.",
                    f"- The bar: r2d2 {r2d2:.2f} against supervised − ½ (supervised − FixMatch) = {sup:.2f} − ½ "
                    f"({sup:.2f} − {fixmatch:.2f}) = {bar:.2f}: {'met' if r2d2 <= bar else 'not met'} "
                    f"({r2d2 - bar:+.2f} points).",
                    f"- r2d2 under supervised on {under} of {n} seeds: "
                    f"{'separates' if under == n else 'does not separate'}."]


def markdown() -> str:
    return join_sections("Faithful r2d2 (`configs/r2d2_fashionmnist_4000.yaml`) against supervised training and "
                         "FixMatch at 4000 labels on the validation split, error % of the final EMA weights, at the "
                         "config's budget and at four times it (every R2-D2 stage × 4; supervised and FixMatch with "
                         "their cosine over 12,000). Made by `python results/fashionmnist_val/budget_faithful.py`.",
                         (section(budget, folders) for budget, folders in FOLDERS.items()))


if __name__ == "__main__":
    write_report(os.path.join(HERE, "budget_faithful.md"), markdown())
