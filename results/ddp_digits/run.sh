#!/usr/bin/env bash
# Regenerates results/ddp_digits/table.md: r2d2 under torchrun on 2 CPU processes (gloo, 8 + 24
# samples each) against 1 process with the same global batch (16 + 48), digits, 100 labels,
# 400 iterations (the setting of integration_tests/test_distributed.py), seeds 0 1 2.
# Run from the repository root: bash results/ddp_digits/run.sh
set -euo pipefail
out=results/ddp_digits
mkdir -p "$out/logs"
common=(--c configs/r2d2_digits_100.yaml --num_train_iter 400 --epoch 4 --num_eval_iter 100
        --num_log_iter 50 --uratio 3 --r2d2_warmup_iter 150 --r2d2_d2_iter 100 --r2d2_r2_iter 100
        --r2d2_repredict_period 25 --r2d2_finetune_iter 50 --save_dir "$out/runs")
for seed in 0 1 2; do
  OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 -m r2d2_plugin.cli.train "${common[@]}" \
    --batch_size 8 --seed "$seed" --save_name "two_$seed" > "$out/logs/two_$seed.log" 2>&1
  OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=1 -m r2d2_plugin.cli.train "${common[@]}" \
    --batch_size 16 --seed "$seed" --save_name "one_$seed" > "$out/logs/one_$seed.log" 2>&1
done
python - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def read(name):
    text = open(f"{out}/logs/{name}.log").read()
    top1 = float(re.findall(r"final top-1 ([0-9.]+)", text)[-1])
    pl = float(re.findall(r"r2d2/pseudo_label_acc: ([0-9.]+)", text)[-1])
    return 100 * top1, 100 * pl
rows = ["| seed | top-1 % 2 processes | top-1 % 1 process | difference | pseudo-label acc % 2 processes | 1 process | difference |",
        "|---|---|---|---|---|---|---|"]
for seed in (0, 1, 2):
    (t2, p2), (t1, p1) = read(f"two_{seed}"), read(f"one_{seed}")
    rows.append(f"| {seed} | {t2:.2f} | {t1:.2f} | {t2 - t1:+.2f} | {p2:.2f} | {p1:.2f} | {p2 - p1:+.2f} |")
open(f"{out}/table.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY
