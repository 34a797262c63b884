"""The configs against the baselines on the validation split with the whole 50k pool (issue 16,
item 2), seeds 0, 1, 2 (the built-in ``fashionmnist`` with ``eval_split: val``). At 40 labels
each sub-folder of ``pool50k_40/`` is one r2d2_strong setting, FixMatch or the other baselines
(``baselines/``), and ``pool50k_40_r2d2*/`` r2d2; at 250 and 4000 labels ``pool50k_<n>/`` holds
every algorithm on its config and ``pool50k_<n>_<variant>/`` one R2-D2 variant. Each folder's
``COMMAND`` (from the repository root) makes its ``runs.csv``; this script writes ``pool50k.md``
here from them.
Usage, from the repository root: python results/fashionmnist_val/pool50k.py
"""
import os
from typing import Dict, List, Sequence, Tuple

from r2d2_plugin.tools.common import final_errors, mean_pm_std, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = "500 / 250 / 2000 / 250"
REFERENCE_SPLIT = "947 / 947 / 948 / 158 (reference split)"
OLD_STRONG = "α 0.1, λ 500, KL term, no threshold"
HARD = "hard target (`r2d2_strong_target_loss: hard`), α 1, λ 50, threshold 0.95"
LAMBDA500 = "the config, λ 500 (store step 7.8, ten times the config's)"
WARMUP300 = "stages 300 / 25 / 2675 / 0, R2 every 25 iterations (107 periods, lrs 0.04 → 0.01)"
R2_WEAK_VIEW = ("R2 from the weak view (`r2d2_repredict_from: weak_view`: each row the network's train-mode "
                "logits on its weak view in the step that first reads it)")
WEAK_VIEW = f"the config, {R2_WEAK_VIEW}"
WEAK_VIEW_WARMUP300 = f"{WEAK_VIEW}, stages 300 / 1594 / 1106 / 0"
FIXMATCH_LIKE = f"{WEAK_VIEW}, no warm-up (stages 0 / 1894 / 1106 / 0), α 4/3 (λ 37.5), β 0"
REDUCED = ("FixMatch reduced (`fixmatch_reduction.py`): the FixMatch-like row with a reprediction "
           "from the weak view before every iteration (stages 0 / 0 / 3000 / 0, period 1)")
REDUCED_COSINE = f"{REDUCED} and USB's cosine lrs 0.05 cos(7πk / 48000): FixMatch's arithmetic"
REDUCED_STEPPED = f"{REDUCED} and the FixMatch-like row's stepped lrs: that row without D2's stale re-reads"
RERUN = "its config, re-run in the twenty-fifth session (the same code path and seeds)"
# folder: (algorithm, stages warm-up / D2 / R2 / fine-tune, R2 periods, other options)
RUNS_40 = {
    "fixmatch": ("fixmatch", "", "", "configs/r2d2_fashionmnist_40.yaml's settings"),
    "control": ("r2d2_strong", REFERENCE_SPLIT, "4 × 237", f"the config before: {OLD_STRONG}"),
    "freq": ("r2d2_strong", STAGES, "8 × 250", OLD_STRONG),
    "freq_a1": ("r2d2_strong", STAGES, "8 × 250", "α 1, λ 50, KL term, no threshold"),
    "freq_a1_t95": ("r2d2_strong", STAGES, "8 × 250", "α 1, λ 50, KL term, threshold 0.95"),
    "a1_t95": ("r2d2_strong", REFERENCE_SPLIT, "4 × 237", "α 1, λ 50, KL term, threshold 0.95"),
    "r2every25": ("r2d2_strong", STAGES, "80 × 25", OLD_STRONG),
    "r2every25_a1_t95": ("r2d2_strong", STAGES, "80 × 25", "α 1, λ 50, KL term, threshold 0.95"),
    "hard_a1_t95": ("r2d2_strong", REFERENCE_SPLIT, "4 × 237", f"the config before: {HARD}"),
    "hard_ft0_lr": ("r2d2_strong", "947 / 947 / 1106 / 0", "4 × 276",
                    f"**the config**: {HARD}, R2 lrs 0.04 / 0.03 / 0.02 / 0.01"),
    "hard_ft0_lr_lambda500": ("r2d2_strong", "947 / 947 / 1106 / 0", "4 × 276", LAMBDA500),
    "hard_ft0_lr_warmup300_r2every25": ("r2d2_strong", "300 / 25 / 2675 / 0", "107 × 25",
                                        "the config, R2 every 25 iterations (lrs 0.04 → 0.01)"),
    "hard_ft0_lr_weakview": ("r2d2_strong", "947 / 947 / 1106 / 0", "4 × 276", WEAK_VIEW),
    "hard_ft0_lr_weakview_warmup300": ("r2d2_strong", "300 / 1594 / 1106 / 0", "4 × 276", WEAK_VIEW),
    "hard_ft0_lr_weakview_fixmatchlike": ("r2d2_strong", "0 / 1894 / 1106 / 0", "4 × 276", FIXMATCH_LIKE),
    "fmreduction_stepped": ("r2d2_strong", "0 / 0 / 3000 / 0", "3000 × 1", REDUCED_STEPPED),
    "fmreduction_cosine": ("r2d2_strong", "0 / 0 / 3000 / 0", "3000 × 1", REDUCED_COSINE),
}
BASELINES = ("supervised", "pseudolabel", "fixmatch")
# (label count, baseline) -> folder; at 40 labels FixMatch is the r2d2_strong table's
BASELINE_FOLDERS = {(n, a): f"pool50k_{n}" for n in (4000, 250) for a in BASELINES}
BASELINE_FOLDERS.update({(40, "supervised"): "pool50k_40/baselines",
                         (40, "pseudolabel"): "pool50k_40/baselines",
                         (40, "fixmatch"): "pool50k_40/fixmatch"})
NO_FT = "no fine-tune (stages 947 / 947 / 1106 / 0)"
NO_FT_LR = "no fine-tune, R2 lrs 0.04 / 0.03 / 0.02 / 0.01"
EVERY25 = f"{HARD}, stages 947 / 25 / 2028 / 0, R2 every 25 iterations (81 periods, lrs 0.04 → 0.01)"
# label count: [(folder, algorithm, setting)], the baselines first
RUNS_SUITE: Dict[int, List[Tuple[str, str, str]]] = {
    4000: [
        ("pool50k_4000", "r2d2", "the config before: stages 947 / 947 / 948 / 158 (a fine-tune)"),
        ("pool50k_4000_ft0", "r2d2", NO_FT),
        ("pool50k_4000_ft0_b0", "r2d2", "no fine-tune, β 0"),
        ("pool50k_4000_ft0_a0b0", "r2d2", "no fine-tune, α 0, β 0: no unlabeled term"),
        ("pool50k_4000_ft0_lr", "r2d2", f"**the config**: {NO_FT_LR}"),
        ("pool50k_4000_ft0_lr_weakview", "r2d2", WEAK_VIEW),
        ("pool50k_4000", "r2d2_strong", "the config before: the reference's split, lrs 0.05 → 0.0017"),
        ("pool50k_4000_strong_hard", "r2d2_strong", HARD),
        ("pool50k_4000_strong_ft0_lr", "r2d2_strong", f"**the config**: {NO_FT_LR}"),
        ("pool50k_4000_strong_weakview", "r2d2_strong", WEAK_VIEW)],
    250: [
        ("pool50k_250", "r2d2", "the config before: the reference's split (a fine-tune)"),
        ("pool50k_250_r2d2_ce", "r2d2", "the 4000-label config before (labeled loss ce, lrs 0.05 → 0.0017)"),
        ("pool50k_250_r2d2_ft0", "r2d2", f"**the config**: {NO_FT}"),
        ("pool50k_250_r2d2_ft0_lr", "r2d2", f"the 4000-label config (labeled loss ce, {NO_FT_LR})"),
        ("pool50k_250_r2d2_ft0_weakview", "r2d2", WEAK_VIEW),
        ("pool50k_250", "r2d2_strong", f"the config before: {OLD_STRONG}"),
        ("pool50k_250_strong_hard", "r2d2_strong", HARD),
        ("pool50k_250_strong_ft0_lr", "r2d2_strong", f"the config before: {HARD}, {NO_FT_LR}"),
        ("pool50k_250_strong_r2every25", "r2d2_strong", EVERY25),
        ("pool50k_250_strong_r2every25_net", "r2d2_strong", f"{EVERY25}, from the network, not the EMA"),
        ("pool50k_250_strong_warmup300_r2every25", "r2d2_strong",
         f"{HARD}, {WARMUP300}"),
        ("pool50k_250_strong_a133", "r2d2_strong",
         "the config, α 4/3 (λ 37.5, the same store step): the unlabeled term at FixMatch's weight per image"),
        ("pool50k_250_strong_b0", "r2d2_strong", "the config, β 0 (no entropy term)"),
        ("pool50k_250_strong_t98", "r2d2_strong", "the config, threshold 0.98"),
        ("pool50k_250_strong_lambda500", "r2d2_strong", LAMBDA500),
        ("pool50k_250_strong_lambda2000", "r2d2_strong", "the config, λ 2000 (store step 31)"),
        ("pool50k_250_strong_weakview", "r2d2_strong", f"**the config**: the config before, {R2_WEAK_VIEW}"),
        ("pool50k_250_strong_weakview_warmup300", "r2d2_strong", WEAK_VIEW_WARMUP300),
        ("pool50k_250_strong_weakview_r2every25", "r2d2_strong", f"{EVERY25}, R2 from the weak view"),
        ("pool50k_250_strong_weakview_fixmatchlike", "r2d2_strong", FIXMATCH_LIKE),
        ("pool50k_250_strong_fmreduction_stepped", "r2d2_strong", REDUCED_STEPPED),
        ("pool50k_250_strong_fmreduction_cosine", "r2d2_strong", REDUCED_COSINE),
        ("pool50k_fixmatch_rerun", "fixmatch", RERUN)],
    40: [
        ("pool50k_40_r2d2", "r2d2", "**the config**"),
        ("pool50k_40_r2d2_ft0_lr", "r2d2", f"the 4000-label config ({NO_FT_LR})"),
        ("pool50k_40/hard_a1_t95", "r2d2_strong", HARD),
        ("pool50k_40/hard_ft0_lr", "r2d2_strong", f"**the config**: {HARD}, {NO_FT_LR}"),
        ("pool50k_40/hard_ft0_lr_lambda500", "r2d2_strong", LAMBDA500),
        ("pool50k_40/hard_ft0_lr_warmup300_r2every25", "r2d2_strong",
         f"the config, {WARMUP300}"),
        ("pool50k_40/hard_ft0_lr_weakview", "r2d2_strong", WEAK_VIEW),
        ("pool50k_40/hard_ft0_lr_weakview_warmup300", "r2d2_strong", WEAK_VIEW_WARMUP300),
        ("pool50k_40/hard_ft0_lr_weakview_fixmatchlike", "r2d2_strong", FIXMATCH_LIKE),
        ("pool50k_40/fmreduction_stepped", "r2d2_strong", REDUCED_STEPPED),
        ("pool50k_40/fmreduction_cosine", "r2d2_strong", REDUCED_COSINE),
        ("pool50k_fixmatch_rerun", "fixmatch", RERUN)],
}


def errors(folder: str, algorithm: str = "", num_labels: int = 0) -> Dict[int, float]:
    """Seed -> final error % of the folder's finished runs (of ``algorithm`` and ``num_labels``
    only, if given)."""
    return {seed: error for (alg, labels, seed), error in final_errors(os.path.join(HERE, folder, "runs.csv")).items()
            if (not algorithm or alg == algorithm) and (not num_labels or labels == num_labels)}


def mean_std(values: List[float]) -> str:
    """``mean ± std`` of ``values``; "—" for none."""
    return mean_pm_std(values) if values else "—"


def paired(err: Dict[int, float], ref: Dict[int, float]) -> str:
    """Per-seed differences err − ref over their shared seeds, as mean ± sample std."""
    return mean_std([err[s] - ref[s] for s in sorted(err) if s in ref])


def row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_40() -> List[str]:
    control, fixmatch = errors("pool50k_40/control"), errors("pool50k_40/fixmatch")
    lines = ["## 40 labels: r2d2_strong's settings against FixMatch", "",
             row(["folder", "algorithm", "stages", "R2 periods", "other", "error % per seed",
                  "**mean ± std**", "− control", "− FixMatch"]), "|---" * 9 + "|"]
    for folder, (algorithm, stages, periods, other) in RUNS_40.items():
        err = errors(f"pool50k_40/{folder}")
        if err:
            vs = [paired(err, ref) if name != folder else "—"
                  for name, ref in (("control", control), ("fixmatch", fixmatch))]
            lines.append(row([f"`{folder}`", algorithm, stages, periods, other,
                              " / ".join(f"{err[s]:.2f}" for s in sorted(err)),
                              f"**{mean_std(list(err.values()))}**", *vs]))
    return lines


def table_suite(num_labels: int) -> List[str]:
    base = [(BASELINE_FOLDERS[num_labels, a], a, "its config") for a in BASELINES]
    refs = {a: errors(folder, a, num_labels) for folder, a, _ in base}
    lines = [f"## {num_labels} labels: every algorithm on its config, r2d2 variants", "",
             row(["folder", "algorithm", "setting", "error % per seed", "**mean ± std**",
                  *[f"− {a}" for a in BASELINES]]), "|---" * 8 + "|"]
    for folder, algorithm, setting in base + RUNS_SUITE[num_labels]:
        err = errors(folder, algorithm, num_labels)
        if err:
            vs = [paired(err, refs[a]) if (folder, algorithm) != (BASELINE_FOLDERS[num_labels, a], a) else "—"
                  for a in BASELINES]
            lines.append(row([f"`{folder}`", algorithm, setting,
                              " / ".join(f"{err[s]:.2f}" for s in sorted(err)),
                              f"**{mean_std(list(err.values()))}**", *vs]))
    return lines


def markdown() -> str:
    lines = ["Validation error % (final EMA weights), whole 50k pool, seeds 0 / 1 / 2. Mean ± sample "
             "std (n − 1) over seeds; the differences (− control, − FixMatch, − supervised, ...) are "
             "per seed (same labeled set), then mean ± sample std. Made by "
             "`python results/fashionmnist_val/pool50k.py`.", ""]
    lines += table_40()
    for num_labels in (4000, 250, 40):
        lines += [""] + table_suite(num_labels)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    write_report(os.path.join(HERE, "pool50k.md"), markdown())
