"""r2d2_strong's gap to FixMatch at 40 labels, seed by seed, beside both runs' top-1 when
r2d2_strong's warm-up ends (issue 16): validation seeds 0-5 (``pool50k_40/`` for 0-2,
``pool50k_40_seeds345/`` for 3-5, each folder's ``COMMAND`` makes it) and, for comparison only
(nothing is chosen on it), the test suite's seeds 0-2 (``../fashionmnist``). Writes
``warmup_gap.md`` here.
Usage, from the repository root: python results/fashionmnist_val/warmup_gap.py
"""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from r2d2_plugin.tools.common import final_errors, mean_pm_std, read_rows, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = os.path.join(HERE, "..", "fashionmnist")
# the last evaluation before r2d2_strong's warm-up (947 iterations) ends
WARMUP_EVAL = 750
# (split, seeds) -> role -> folder; role "config" is configs/r2d2_strong_fashionmnist_40.yaml
FOLDERS: Dict[Tuple[str, Tuple[int, ...]], Dict[str, str]] = {
    ("validation", (0, 1, 2)): {"supervised": "pool50k_40/baselines", "fixmatch": "pool50k_40/fixmatch",
                                "config": "pool50k_40/hard_ft0_lr",
                                "fixmatchlike": "pool50k_40/hard_ft0_lr_weakview_fixmatchlike"},
    ("validation", (3, 4, 5)): {"supervised": "pool50k_40_seeds345/baselines",
                                "fixmatch": "pool50k_40_seeds345/fixmatch", "config": "pool50k_40_seeds345/config",
                                "fixmatchlike": "pool50k_40_seeds345/fixmatchlike"},
    ("test", (0, 1, 2)): {role: SUITE for role in ("supervised", "fixmatch", "config")},
}
ALGORITHM = {"supervised": "supervised", "fixmatch": "fixmatch", "config": "r2d2_strong",
             "fixmatchlike": "r2d2_strong"}


def folder_path(folder: str) -> str:
    return folder if os.path.isabs(folder) else os.path.join(HERE, folder)


def error(folder: str, algorithm: str, seed: int, num_labels: int = 40) -> Optional[float]:
    """Final error % of one finished run (None if it has not finished)."""
    return final_errors(os.path.join(folder_path(folder), "runs.csv")).get((algorithm, num_labels, seed))


def top1_at(folder: str, algorithm: str, seed: int, iteration: int) -> Optional[float]:
    """Top-1 % of the evaluation at ``iteration`` in the run's curve (None if absent)."""
    path = os.path.join(folder_path(folder), "curves", f"{algorithm}_40_seed{seed}.csv")
    for r in read_rows(path):
        if int(r["iteration"]) == iteration and r["eval/top-1-acc"]:
            return 100 * float(r["eval/top-1-acc"])
    return None


def cell(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}"


def diff(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def markdown() -> str:
    lines = [f"r2d2_strong (`configs/r2d2_strong_fashionmnist_40.yaml`) against FixMatch at 40 labels, "
             f"seed by seed. Top-1 at iteration {WARMUP_EVAL}: the last evaluation before r2d2_strong's "
             "warm-up (947 iterations, labeled images only) ends; validation and test top-1 are on different "
             "eval sets. FixMatch-like: the config with no warm-up, "
             "R2 from the weak view, α 4/3, β 0 (`pool50k.md`). Made by "
             "`python results/fashionmnist_val/warmup_gap.py`.", "",
             "| split | seed | supervised error % | FixMatch top-1 at 750 | r2d2_strong top-1 at 750 | "
             "FixMatch error % | config error % | config − FixMatch | FixMatch-like error % | "
             "FixMatch-like − config |", "|---" * 10 + "|"]
    per_split: Dict[str, Dict[str, List[float]]] = {}
    like_vs_config: List[float] = []
    for (split, seeds), roles in FOLDERS.items():
        for seed in seeds:
            err = {role: error(folder, ALGORITHM[role], seed) for role, folder in roles.items()}
            early = {role: top1_at(roles[role], ALGORITHM[role], seed, WARMUP_EVAL) for role in ("fixmatch", "config")}
            gap, like = diff(err["config"], err["fixmatch"]), diff(err.get("fixmatchlike"), err["config"])
            if gap is not None and None not in early.values():
                for key, value in (("gap", gap), ("warm-up", early["config"]), ("fixmatch", early["fixmatch"])):
                    per_split.setdefault(split, {}).setdefault(key, []).append(value)
            if like is not None:
                like_vs_config.append(like)
            lines.append("| " + " | ".join([split, str(seed), cell(err["supervised"]), cell(early["fixmatch"]),
                                            cell(early["config"]), cell(err["fixmatch"]), cell(err["config"]),
                                            cell(gap), cell(err.get("fixmatchlike")), cell(like)]) + " |")
    lines.append("")
    for split, values in per_split.items():
        n = len(values["gap"])
        line = (f"- {split} ({n} seeds): config − FixMatch {mean_pm_std(values['gap'])} points (per-seed "
                f"differences, mean ± sample std, n − 1); top-1 at iteration {WARMUP_EVAL}: r2d2_strong "
                f"{np.mean(values['warm-up']):.1f} %, FixMatch {np.mean(values['fixmatch']):.1f} %")
        if n > 3:
            r = float(np.corrcoef(values["warm-up"], values["gap"])[0, 1])
            line += f"; r2d2_strong's top-1 at {WARMUP_EVAL} against config − FixMatch: Pearson r = {r:.2f}"
        lines.append(line + ".")
    if like_vs_config:
        lower = sum(v < 0 for v in like_vs_config)
        lines.append(f"- FixMatch-like − config, validation ({len(like_vs_config)} seeds): "
                     f"{mean_pm_std(like_vs_config)} points; lower on {lower} of {len(like_vs_config)} seeds.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    write_report(os.path.join(HERE, "warmup_gap.md"), markdown())
