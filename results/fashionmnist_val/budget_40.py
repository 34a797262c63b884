"""r2d2_strong's gap to FixMatch at 40 labels on the validation split, at the configs' budget
(3,000 iterations: the folders of ``warmup_gap.py``) and at four times it (12,000 iterations, every
R2-D2 stage × 4: ``budget_40_12000/``, each sub-folder's ``COMMAND`` makes it), seed by seed, with
the rule fixed before seeds 2-5 finished (issue 16). Writes ``budget_40.md`` here.
Usage, from the repository root: python results/fashionmnist_val/budget_40.py
"""
import os
from typing import Dict, List, Optional

from r2d2_plugin.tools.common import mean_pm_std, write_report
from warmup_gap import ALGORITHM, FOLDERS, HERE, cell, diff, error

LONG = {"fixmatch": "budget_40_12000/fixmatch", "config": "budget_40_12000/config"}
SEEDS = range(6)
# met on at least this many of the six seeds (the sign-test evidence of "every one of 3")
NEEDED = 5


def short_folder(role: str, seed: int) -> str:
    """The validation folder of the 3,000-iteration run of ``role`` for ``seed``."""
    return next(roles[role] for (split, seeds), roles in FOLDERS.items() if split == "validation" and seed in seeds)


def markdown() -> str:
    lines = ["r2d2_strong (`configs/r2d2_strong_fashionmnist_40.yaml`) against FixMatch at 40 labels on the "
             "validation split, error % of the final EMA weights: at 3,000 iterations (the configs' budget) and "
             "at 12,000 (every R2-D2 stage × 4, FixMatch's cosine over 12,000). Made by "
             "`python results/fashionmnist_val/budget_40.py`.", "",
             "| seed | FixMatch 3,000 | config 3,000 | gap 3,000 | FixMatch 12,000 | config 12,000 | gap 12,000 | "
             "gap 12,000 − gap 3,000 |", "|---" * 8 + "|"]
    gaps: Dict[str, List[float]] = {"short": [], "long": [], "change": []}
    errors: Dict[str, List[float]] = {}
    for seed in SEEDS:
        short = {role: error(short_folder(role, seed), ALGORITHM[role], seed) for role in LONG}
        long = {role: error(folder, ALGORITHM[role], seed) for role, folder in LONG.items()}
        gap_short, gap_long = diff(short["config"], short["fixmatch"]), diff(long["config"], long["fixmatch"])
        change: Optional[float] = diff(gap_long, gap_short)
        if change is not None:
            for key, value in (("short", gap_short), ("long", gap_long), ("change", change)):
                gaps[key].append(value)
            for role in ("fixmatch", "config"):
                errors.setdefault(f"{role} 3,000", []).append(short[role])
                errors.setdefault(f"{role} 12,000", []).append(long[role])
        lines.append("| " + " | ".join([str(seed), cell(short["fixmatch"]), cell(short["config"]), cell(gap_short),
                                        cell(long["fixmatch"]), cell(long["config"]), cell(gap_long),
                                        cell(change)]) + " |")
    n = len(gaps["change"])
    closed, narrowed = sum(g <= 0 for g in gaps["long"]), sum(c < 0 for c in gaps["change"])
    lines += ["", f"Over the {n} seeds with both budgets (per-seed differences, mean ± sample std, n − 1): gap at "
              f"3,000 {mean_pm_std(gaps['short'])}, at 12,000 {mean_pm_std(gaps['long'])}, change "
              f"{mean_pm_std(gaps['change'])} points. Error % (mean ± sample std over the seeds): "
              + ", ".join(f"{key} {mean_pm_std(values)}" for key, values in errors.items()) + ".",
              f"- Closed (config at or under FixMatch at 12,000) on {closed} of {n} seeds; narrowed (gap smaller "
              f"at 12,000) on {narrowed} of {n}. The rule: at least {NEEDED} of 6 → "
              + ("closes" if n == 6 and closed >= NEEDED else "narrows" if n == 6 and narrowed >= NEEDED
                 else "neither" if n == 6 else "undecided until six seeds") + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    write_report(os.path.join(HERE, "budget_40.md"), markdown())
