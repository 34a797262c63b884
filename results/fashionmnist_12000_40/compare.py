"""r2d2_strong against FixMatch per seed at 12,000 iterations (this folder) and at 3,000 (the
suite, ../fashionmnist), test error % of the final EMA weights. Writes compare.md.

    python results/fashionmnist_12000_40/compare.py
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent


def errors(folder: Path) -> dict:
    with open(folder / "runs.csv", newline="") as f:
        return {(r["algorithm"], int(r["seed"])): float(r["error_pct"]) for r in csv.DictReader(f)
                if r["num_labels"] == "40" and r["algorithm"] in ("fixmatch", "r2d2_strong")}


def mean_std(values: list) -> str:
    return f"{statistics.mean(values):+.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    long, short = errors(HERE), errors(HERE.parent / "fashionmnist")
    seeds = sorted({s for _, s in long})
    rows, gaps_long, gaps_short = [], [], []
    for s in seeds:
        gl = long["r2d2_strong", s] - long["fixmatch", s]
        gs = short["r2d2_strong", s] - short["fixmatch", s]
        gaps_long.append(gl)
        gaps_short.append(gs)
        rows.append(f"| {s} | {short['fixmatch', s]:.2f} | {short['r2d2_strong', s]:.2f} | {gs:+.2f} | "
                    f"{long['fixmatch', s]:.2f} | {long['r2d2_strong', s]:.2f} | {gl:+.2f} | {gl - gs:+.2f} |")
    text = ["# r2d2_strong − FixMatch at 40 labels, test set, 3,000 and 12,000 iterations", "",
            "Made by `python results/fashionmnist_12000_40/compare.py`; error % of the final EMA weights.", "",
            "| seed | FixMatch 3,000 | r2d2_strong 3,000 | gap 3,000 | FixMatch 12,000 | r2d2_strong 12,000 | gap 12,000 | change |",
            "|---|---|---|---|---|---|---|---|", *rows, "",
            f"Per-seed gaps, mean ± sample std (n − 1): {mean_std(gaps_short)} at 3,000, {mean_std(gaps_long)} at "
            f"12,000; change {mean_std([a - b for a, b in zip(gaps_long, gaps_short)])}. Closed on "
            f"{sum(g <= 0 for g in gaps_long)} of {len(seeds)} seeds, narrowed on "
            f"{sum(a < b for a, b in zip(gaps_long, gaps_short))} of {len(seeds)}."]
    (HERE / "compare.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
