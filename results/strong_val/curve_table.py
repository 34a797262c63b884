"""Mean error % on the validation split along the run, over the seeds whose curves match each
glob (read and averaged by ``r2d2_plugin.tools.bench``). Each argument is ``LABEL=GLOB`` (or a
bare glob, its own label); from the repository root:

    python results/strong_val/curve_table.py 'kept=results/strong_val/runs/kept/curves/*seed[0-4].csv' ...
"""
import glob
import sys

from r2d2_plugin.tools.bench import read_curve, seed_mean

ITERATIONS = (600, 800, 1000, 1200, 1400, 1600, 1900)

print("| curves | seeds | " + " | ".join(f"it {i}" for i in ITERATIONS) + " |")
print("|---|---|" + "---|" * len(ITERATIONS))
for argument in sys.argv[1:]:
    label, _, pattern = argument.rpartition("=")
    curves = [read_curve(path) for path in sorted(glob.glob(pattern))]
    mean_top1 = dict(zip(*seed_mean(curves, "eval/top-1-acc")))
    print(f"| `{label or pattern}` | {len(curves)} | "
          + " | ".join(f"{100 - 100 * mean_top1[i]:.2f}" for i in ITERATIONS) + " |")
