"""The paper's flattening claim, measured: D2 with R2 against D2 without R2 (same budget).

    python -m r2d2_plugin.tools.flattening --with-r2 results/digits --without-r2 results/digits_no_r2 \\
        --num_labels 40 --out results/flattening_digits_40

Reads the r2d2 curves of two bench suites that differ only in ``r2d2_use_r2`` and writes
``flattening.png`` (pseudo-label entropy and accuracy vs iteration, seed means) and ``table.md``
(both at the end of D2 and of each R2 period, and the final error %), with ``COMMAND``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from .bench import column, read_curves, seed_mean
from .common import STD_NOTE, mean_pm_std, read_rows, run_tool, write_command, write_report

KEYS = (("r2d2/pseudo_label_entropy", "pseudo-label entropy (nats)"),
        ("r2d2/pseudo_label_acc", "pseudo-label accuracy"))


def value_at(curves: List[Dict[str, np.ndarray]], key: str, iteration: int) -> float:
    """The mean over seeds of ``key`` at the last iteration logged at or before ``iteration``."""
    its, mean = seed_mean(curves, key)
    return float(mean[np.flatnonzero(its <= iteration)[-1]])


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m r2d2_plugin.tools.flattening")
    parser.add_argument("--with-r2", required=True)
    parser.add_argument("--without-r2", required=True)
    parser.add_argument("--num_labels", type=int, default=40)
    parser.add_argument("--out", required=True)
    parser.add_argument("--at", nargs="+", type=int, default=[1200, 1350, 1500, 1650, 1800],
                        help="iterations done to tabulate (default: the end of digits_40's D2 "
                             "stage and of each R2 period, just before each reprediction)")
    args = parser.parse_args(argv)
    suites = {"D2 + R2": args.with_r2, "D2 without R2": args.without_r2}
    curves = {name: read_curves(path, "r2d2", args.num_labels) for name, path in suites.items()}
    os.makedirs(args.out, exist_ok=True)
    write_command(args.out, "r2d2_plugin.tools.flattening", argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (key, label) in zip(axes, KEYS):
        for name, c in curves.items():
            ax.plot(*seed_mean(c, key), label=f"{name} ({len(c)} seeds)")
        ax.set(xlabel="iteration", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Pseudo-labels with and without repetitive reprediction, {args.num_labels} labels "
                 "(seed means)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "flattening.png"), dpi=120)
    plt.close(fig)

    lines = ["| run | " + " | ".join(f"it {i}: entropy / acc" for i in args.at)
             + f" | final error % ({STD_NOTE}) |", "|---|" + "---|" * (len(args.at) + 1)]
    for name, c in curves.items():
        cells = [f"{value_at(c, KEYS[0][0], i):.3f} / {value_at(c, KEYS[1][0], i):.3f}" for i in args.at]
        rows = [r for r in read_rows(os.path.join(suites[name], "runs.csv"))
                if int(r["num_labels"]) == args.num_labels]
        err = column(rows, "r2d2", "error_pct")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean_pm_std(err)} |")
    write_report(os.path.join(args.out, "table.md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    run_tool(main)
