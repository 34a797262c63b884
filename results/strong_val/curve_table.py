"""Mean error % on the validation split along the run, over the seeds whose curves match each
glob; run from this folder: python curve_table.py 'v3_ema/curves/*_40_*' ..."""
import csv
import glob
import sys

ITERATIONS = (600, 800, 1000, 1200, 1400, 1600, 1900)


def error_at(rows, iteration):
    return 100 - 100 * float(next(r["eval/top-1-acc"] for r in rows if int(float(r["iteration"])) == iteration))


print("| curves | seeds | " + " | ".join(f"it {i}" for i in ITERATIONS) + " |")
print("|---|---|" + "---|" * len(ITERATIONS))
for pattern in sys.argv[1:]:
    runs = [list(csv.DictReader(open(path))) for path in sorted(glob.glob(pattern))]
    means = [sum(error_at(rows, i) for rows in runs) / len(runs) for i in ITERATIONS]
    print(f"| `{pattern}` | {len(runs)} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
