"""Mean error % on the validation split along the run, over the seeds whose curves match each
glob (read and averaged by ``r2d2_plugin.tools.bench``); run from this folder:
python curve_table.py 'v3_ema/curves/*_40_*' ..."""
import glob
import sys

from r2d2_plugin.tools.bench import read_curve, seed_mean

ITERATIONS = (600, 800, 1000, 1200, 1400, 1600, 1900)

print("| curves | seeds | " + " | ".join(f"it {i}" for i in ITERATIONS) + " |")
print("|---|---|" + "---|" * len(ITERATIONS))
for pattern in sys.argv[1:]:
    curves = [read_curve(path) for path in sorted(glob.glob(pattern))]
    mean_top1 = dict(zip(*seed_mean(curves, "eval/top-1-acc")))
    print(f"| `{pattern}` | {len(curves)} | " + " | ".join(f"{100 - 100 * mean_top1[i]:.2f}" for i in ITERATIONS) + " |")
