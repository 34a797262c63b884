"""The labeled samples' loss after the warm-up on the validation split (issue 16, item 2): each
sub-folder of ``labeled_ce/`` is one bench run (its ``COMMAND``: made from the repository root
after ``make_npz.py``'s files, into that folder). Writes ``labeled_ce.md`` here from the runs'
curves (USB's EMA top-1 on the validation split every 500 iterations; error % = 100 − final).
Usage, from the repository root: python results/fashionmnist_val/labeled_ce.py
"""
import glob
import os
from typing import List, Tuple

from r2d2_plugin.tools.common import read_rows, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
REF_LOSS, CE = "reference (D2 loss)", "**ce**"
LRS_10S = "0.15 → 0.005, FT 0.00125"
LRS_10, LRS_1, LRS_3 = "0.15 → 0.005, FT 0.0125", "0.015 → 0.0005, FT 0.00125", "0.05 → 0.0017, FT 0.004"
W2000, REF_SPLIT = "2000 / 400 / 500 / 100", "reference (947 / 947 / 948 / 158)"
# folder: (labels, algorithm, labeled loss, lrs, stages, other options)
RUNS = {
    "sup": (4000, "supervised", "", "", "", ""),
    "fixmatch": (4000, "fixmatch", "", "", "", ""),
    "pseudolabel": (4000, "pseudolabel", "", "", "", ""),
    "control": (4000, "r2d2", REF_LOSS, LRS_10, W2000, "(the previous 4000-label config)"),
    "ce_lr10_w2000": (4000, "r2d2", CE, LRS_10, W2000, ""),
    "ce_lr1_w2000": (4000, "r2d2", CE, LRS_1, W2000, ""),
    "ce_lr1_w2000_a1": (4000, "r2d2", CE, LRS_1, W2000, "α 1, λ 50"),
    "ce_lr3_ref": (4000, "r2d2", CE, LRS_3, REF_SPLIT, "(chosen)"),
    "ce_lr3_ref_a1": (4000, "r2d2", CE, LRS_3, REF_SPLIT, "α 1, λ 50"),
    "ce_lr3_ref_a1_b03": (4000, "r2d2", CE, LRS_3, REF_SPLIT, "α 1, λ 50, β 0.3"),
    "s_ce_lr3_ref": (4000, "r2d2_strong", CE, LRS_3, REF_SPLIT, "(chosen)"),
    "s_ce_lr3_ref_a1": (4000, "r2d2_strong", CE, LRS_3, REF_SPLIT, "α 1, λ 50"),
    "s_ce_lr3_ref_a1_t95": (4000, "r2d2_strong", CE, LRS_3, REF_SPLIT, "α 1, λ 50, threshold 0.95"),
    "sup_250": (250, "supervised", "", "", "", ""),
    "control_250": (250, "r2d2", REF_LOSS, LRS_10, REF_SPLIT, "(the 250-label config, kept)"),
    "control_250_s1": (250, "r2d2", REF_LOSS, LRS_10, REF_SPLIT, "(the 250-label config, kept)"),
    "ce_lr3_ref_250": (250, "r2d2", CE, LRS_3, REF_SPLIT, ""),
    "ce_250_s1": (250, "r2d2", CE, LRS_3, REF_SPLIT, ""),
    "s_ce_250": (250, "r2d2_strong", CE, LRS_3, REF_SPLIT, "(chosen)"),
    "s_control_250": (250, "r2d2_strong", REF_LOSS, LRS_10S, REF_SPLIT, "(the previous config)"),
    "sup_40": (40, "supervised", "", "", "", ""),
    "ce_lr3_ref_40": (40, "r2d2", CE, LRS_3, REF_SPLIT, "(chosen)"),
    "s_ce_lr3_ref_40": (40, "r2d2_strong", CE, LRS_3, REF_SPLIT, "(chosen)"),
    "s_ce_40_s1": (40, "r2d2_strong", CE, LRS_3, REF_SPLIT, "(chosen)"),
    "s_control_40": (40, "r2d2_strong", REF_LOSS, LRS_10S, REF_SPLIT, "(the previous config)"),
    "s_control_40_s1": (40, "r2d2_strong", REF_LOSS, LRS_10S, REF_SPLIT, "(the previous config)"),
}


def curve(folder: str) -> Tuple[int, List[Tuple[int, float]]]:
    """The run's seed and its (iteration, EMA top-1 %) evaluations."""
    (path,) = glob.glob(os.path.join(HERE, "labeled_ce", folder, "curves", "*.csv"))
    seed = int(path.rsplit("seed", 1)[1].split(".")[0])
    rows = [r for r in read_rows(path) if r["eval/top-1-acc"]]
    return seed, [(int(r["iteration"]), 100 * float(r["eval/top-1-acc"])) for r in rows]


def markdown() -> str:
    lines = ["Validation error %, one seed per row (differences under ~0.5 point are not resolved). "
             "Made by `python results/fashionmnist_val/labeled_ce.py`; R2 from USB's EMA weights in "
             "every R2-D2 row; stages warm-up / D2 / R2 / fine-tune in iterations.", "",
             "| labels | folder | algorithm | seed | labeled loss after the warm-up | D2 / R2 lrs | stages "
             "| other | EMA top-1 % at 500 … 3000 | **error %** |", "|---" * 10 + "|"]
    for folder, (labels, algorithm, loss, lrs, stages, other) in RUNS.items():
        if not glob.glob(os.path.join(HERE, "labeled_ce", folder, "curves", "*.csv")):
            continue
        seed, points = curve(folder)
        top1 = " / ".join(f"{t:.1f}" for _, t in points)
        lines.append(f"| {labels} | `{folder}` | {algorithm} | {seed} | {loss} | {lrs} | {stages} | {other} "
                     f"| {top1} | **{100 - points[-1][1]:.2f}** |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    write_report(os.path.join(HERE, "labeled_ce.md"), markdown())
