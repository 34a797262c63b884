"""r2d2_strong against FixMatch on the validation split with the whole 50k pool (issue 16, item
2): at 40 labels each sub-folder of ``pool50k_40/`` is one setting run over seeds 0, 1, 2;
``pool50k_250/`` holds both algorithms' configs at 250 labels (each folder's ``COMMAND``, from
the repository root; the built-in ``fashionmnist`` with ``eval_split: val``). Writes
``pool50k.md`` here from the runs' ``runs.csv``.
Usage, from the repository root: python results/fashionmnist_val/pool50k.py
"""
import os
import statistics
from typing import Dict, List

from r2d2_plugin.tools.common import read_rows

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = "500 / 250 / 2000 / 250"
# folder: (algorithm, stages warm-up / D2 / R2 / fine-tune, R2 periods, other options)
RUNS = {
    "fixmatch": ("fixmatch", "", "", "configs/r2d2_fashionmnist_40.yaml's settings"),
    "control": ("r2d2_strong", "947 / 947 / 948 / 158 (reference split)", "4 × 237",
                "configs/r2d2_strong_fashionmnist_40.yaml as it is"),
    "freq": ("r2d2_strong", STAGES, "8 × 250", ""),
    "freq_a1": ("r2d2_strong", STAGES, "8 × 250", "α 1, λ 50"),
    "freq_a1_t95": ("r2d2_strong", STAGES, "8 × 250", "α 1, λ 50, threshold 0.95"),
    "a1_t95": ("r2d2_strong", "947 / 947 / 948 / 158 (reference split)", "4 × 237",
               "α 1, λ 50, threshold 0.95"),
    "r2every25": ("r2d2_strong", STAGES, "80 × 25", ""),
    "r2every25_a1_t95": ("r2d2_strong", STAGES, "80 × 25", "α 1, λ 50, threshold 0.95"),
}


def errors(folder: str, algorithm: str = "") -> Dict[int, float]:
    """Seed -> final error % of the folder's finished runs (of ``algorithm`` only, if given)."""
    path = os.path.join(HERE, folder, "runs.csv")
    rows = read_rows(path) if os.path.exists(path) else []
    return {int(r["seed"]): float(r["error_pct"]) for r in rows if not algorithm or r["algorithm"] == algorithm}


def mean_std(values: List[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else "—"


def markdown() -> str:
    control, fixmatch = errors("pool50k_40/control"), errors("pool50k_40/fixmatch")
    lines = ["Validation error % at 40 labels, whole 50k pool, seeds 0 / 1 / 2. Mean ± sample std "
             "(n − 1) over seeds; the differences are per seed (same labeled set), then mean ± "
             "sample std. Made by `python results/fashionmnist_val/pool50k.py`.", "",
             "| folder | algorithm | stages | R2 periods | other | error % per seed | **mean ± std** "
             "| − control | − FixMatch |", "|---" * 9 + "|"]
    for folder, (algorithm, stages, periods, other) in RUNS.items():
        err = errors(f"pool50k_40/{folder}")
        if not err:
            continue
        seeds = sorted(err)
        vs = [mean_std([err[s] - ref[s] for s in seeds if s in ref]) if name != folder else "—"
              for name, ref in (("control", control), ("fixmatch", fixmatch))]
        per_seed = " / ".join(f"{err[s]:.2f}" for s in seeds)
        lines.append(f"| `{folder}` | {algorithm} | {stages} | {periods} | {other} | {per_seed} "
                     f"| **{mean_std(list(err.values()))}** | {vs[0]} | {vs[1]} |")
    strong, fixmatch = errors("pool50k_250", "r2d2_strong"), errors("pool50k_250", "fixmatch")
    seeds = sorted(set(strong) & set(fixmatch))
    if seeds:
        lines += ["", f"At 250 labels (`pool50k_250/`, each algorithm's 250-label config), seeds "
                  f"{', '.join(map(str, seeds))}:", "",
                  "| algorithm | error % per seed | **mean ± std** |", "|---|---|---|"]
        for name, err in (("fixmatch", fixmatch), ("r2d2_strong", strong)):
            per_seed = " / ".join(f"{err[s]:.2f}" for s in seeds)
            lines.append(f"| {name} | {per_seed} | **{mean_std([err[s] for s in seeds])}** |")
        lines += ["", f"r2d2_strong − FixMatch per seed: {mean_std([strong[s] - fixmatch[s] for s in seeds])}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = markdown()
    with open(os.path.join(HERE, "pool50k.md"), "w") as f:
        f.write(text)
    print(text)
