"""r2d2_strong's gap to FixMatch on the validation split at the configs' budget (3,000 iterations)
and at four times it (12,000 iterations, every R2-D2 stage × 4), seed by seed (issue 16): at 40
labels, seeds 0-5 (``budget_40_12000/``; the short runs are ``warmup_gap.py``'s folders), at 250
labels, seeds 0-2 (``budget_250_12000/``; the short runs ``pool50k_250/`` for FixMatch and
``pool50k_250_strong_weakview/`` for the config), and at 4000 labels, seeds 0-2
(``budget_4000_12000/``; the short runs ``pool50k_4000/`` and ``pool50k_4000_strong_ft0_lr/``). Each
long folder's ``COMMAND`` makes it; each label count's rule was fixed before its runs finished. Writes ``budget_gap.md`` here.
Usage, from the repository root: python results/fashionmnist_val/budget_gap.py
"""
import os
from typing import Callable, Dict, List, NamedTuple, Optional

from r2d2_plugin.tools.common import join_sections, mean_pm_std, write_report
from warmup_gap import ALGORITHM, FOLDERS, HERE, cell, diff, error

ROLES = ("fixmatch", "config")


class Comparison(NamedTuple):
    """One label count: where its short (3,000) and long (12,000) runs are, and its rule."""
    short_folder: Callable[[str, int], str]
    long_folders: Dict[str, str]
    seeds: range
    # the rule: met on at least this many seeds (every one of 3; 5 of 6, the sign-test evidence of
    # "every one of 3")
    needed: int


def warmup_gap_folder(role: str, seed: int) -> str:
    """The validation folder of ``warmup_gap.py``'s 3,000-iteration 40-label run of ``role`` for ``seed``."""
    return next(roles[role] for (split, seeds), roles in FOLDERS.items() if split == "validation" and seed in seeds)


def same_folder(folders: Dict[str, str]) -> Callable[[str, int], str]:
    """``folders[role]`` for every seed."""
    return lambda role, seed: folders[role]


def long_folders(num_labels: int) -> Dict[str, str]:
    return {role: f"budget_{num_labels}_12000/{role}" for role in ROLES}


COMPARISONS = {
    40: Comparison(warmup_gap_folder, long_folders(40), range(6), 5),
    250: Comparison(same_folder({"fixmatch": "pool50k_250", "config": "pool50k_250_strong_weakview"}),
                    long_folders(250), range(3), 3),
    4000: Comparison(same_folder({"fixmatch": "pool50k_4000", "config": "pool50k_4000_strong_ft0_lr"}),
                     long_folders(4000), range(3), 3),
}


def section(num_labels: int, comparison: Comparison) -> List[str]:
    """The per-seed table and the rule's verdict for one label count."""
    lines = [f"## {num_labels} labels, seeds {comparison.seeds[0]}-{comparison.seeds[-1]}", "",
             "| seed | FixMatch 3,000 | config 3,000 | gap 3,000 | FixMatch 12,000 | config 12,000 | gap 12,000 | "
             "gap 12,000 − gap 3,000 |", "|---" * 8 + "|"]
    gaps: Dict[str, List[float]] = {"short": [], "long": [], "change": []}
    errors: Dict[str, List[float]] = {}
    for seed in comparison.seeds:
        short = {role: error(comparison.short_folder(role, seed), ALGORITHM[role], seed, num_labels) for role in ROLES}
        long = {role: error(folder, ALGORITHM[role], seed, num_labels)
                for role, folder in comparison.long_folders.items()}
        gap_short, gap_long = diff(short["config"], short["fixmatch"]), diff(long["config"], long["fixmatch"])
        change: Optional[float] = diff(gap_long, gap_short)
        if change is not None:
            for key, value in (("short", gap_short), ("long", gap_long), ("change", change)):
                gaps[key].append(value)
            for role in ROLES:
                errors.setdefault(f"{role} 3,000", []).append(short[role])
                errors.setdefault(f"{role} 12,000", []).append(long[role])
        lines.append("| " + " | ".join([str(seed), cell(short["fixmatch"]), cell(short["config"]), cell(gap_short),
                                        cell(long["fixmatch"]), cell(long["config"]), cell(gap_long),
                                        cell(change)]) + " |")
    n, total = len(gaps["change"]), len(comparison.seeds)
    if n == 0:
        return lines + ["", "No seed has both budgets yet."]
    closed, narrowed = sum(g <= 0 for g in gaps["long"]), sum(c < 0 for c in gaps["change"])
    verdict = ("closes" if closed >= comparison.needed else "narrows" if narrowed >= comparison.needed
               else "neither") if n == total else f"undecided until {total} seeds"
    return lines + ["", f"Over the {n} seeds with both budgets (per-seed differences, mean ± sample std, n − 1): gap "
                    f"at 3,000 {mean_pm_std(gaps['short'])}, at 12,000 {mean_pm_std(gaps['long'])}, change "
                    f"{mean_pm_std(gaps['change'])} points. Error % (mean ± sample std over the seeds): "
                    + ", ".join(f"{key} {mean_pm_std(values)}" for key, values in errors.items()) + ".",
                    f"- Closed (config at or under FixMatch at 12,000) on {closed} of {n} seeds; narrowed (gap "
                    f"smaller at 12,000) on {narrowed} of {n}. The rule: at least {comparison.needed} of {total} → "
                    f"{verdict}."]


def markdown() -> str:
    return join_sections("r2d2_strong (`configs/r2d2_strong_fashionmnist_{40,250,4000}.yaml`) against FixMatch on the "
                         "validation split, error % of the final EMA weights: at 3,000 iterations (the configs' "
                         "budget) and at 12,000 (every R2-D2 stage × 4, FixMatch's cosine over 12,000). Made by "
                         "`python results/fashionmnist_val/budget_gap.py`.",
                         (section(num_labels, comparison) for num_labels, comparison in COMPARISONS.items()))


if __name__ == "__main__":
    write_report(os.path.join(HERE, "budget_gap.md"), markdown())
