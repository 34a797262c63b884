"""Store storage options at ImageNet size, and their accuracy effect on digits.

    python -m r2d2_plugin.scale --out results/scale                 # ImageNet-size store
    python -m r2d2_plugin.scale --out results/scale --digits        # bf16 / fp16 vs fp32 on digits

Store mode: a synthetic ``PseudoLabelStore`` of ImageNet-1k size (1 281 167 unlabeled rows x
1000 classes; random indices and logits, no images), one option at a time (created, timed,
freed). For each option it writes the bytes a rank holds for 1, 2 and 8 ranks (computed) and the
measured time of the store's work in one training step on this machine: ``read`` + ``descend``
of one unlabeled batch, and one ``assign`` of a batch (R2 assigns the whole store batch by batch
at each reprediction, not every step). The batch is USB's ImageNet batch: ``batch_size`` 64,
``uratio`` 1, so 64 unlabeled rows per step and rank. "sharded" (rows owned by index modulo the
world size) needs multi-process training, which the plugin does not run yet: its bytes and the
rows it would exchange per step are computed, not run. Writes ``table.md``, ``store.csv``,
``COMMAND``.

Digits mode: ``python -m r2d2_plugin.train --c configs/r2d2_digits_40.yaml --r2d2_store_dtype D
--seed S`` for every dtype and seed, one process at a time with ``OMP_NUM_THREADS`` threads; a run
already in ``digits.csv`` is not run again. Writes ``digits.csv``, ``digits.md``,
``COMMAND_digits``; run folders and console logs under ``runs/`` (not committed).
"""
from __future__ import annotations

import argparse
import csv
import gc
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Sequence

import torch

from .store import STORE_DTYPES, PseudoLabelStore

IMAGENET_ROWS, IMAGENET_CLASSES = 1_281_167, 1000
BATCH_ULB = 64  # USB's ImageNet setting: batch_size 64 x uratio 1 unlabeled rows per step
RANKS = (1, 2, 8)
GB = 1e9
# (name, dtype, place) of the options that run in one process.
OPTIONS = [("fp32 on device", "fp32", "device"), ("bf16 on device", "bf16", "device"),
           ("fp16 on device", "fp16", "device"), ("fp32 pinned CPU", "fp32", "cpu_pinned"),
           ("bf16 pinned CPU", "bf16", "cpu_pinned")]
SHARDED = [("fp32 sharded", "fp32"), ("bf16 sharded", "bf16")]
STORE_FIELDS = ["option", "dtype", "place", "ranks", "gpu_bytes_per_rank", "host_bytes_per_rank",
                "exchanged_bytes_per_step_per_rank", "step_ms", "read_ms", "descend_ms",
                "assign_ms", "measured"]
DIGITS_FIELDS = ["dtype", "seed", "final_top1", "best_top1", "error_pct", "best_error_pct",
                 "seconds", "threads"]


def element_bytes(dtype: str) -> int:
    return torch.empty(0, dtype=STORE_DTYPES[dtype]).element_size()


def time_store_ops(dtype: str, place: str, repeats: int, rows: int, classes: int) -> Dict[str, float]:
    """Median milliseconds of ``read`` + ``descend`` and of ``assign`` for one unlabeled batch
    on a ``rows`` x ``classes`` store, with random indices (each repeat a new batch)."""
    generator = torch.Generator().manual_seed(0)
    store = PseudoLabelStore(rows, classes, torch.zeros(rows, dtype=torch.long), dtype, place)
    store.logits.normal_(generator=generator)
    times: Dict[str, List[float]] = {"read": [], "descend": [], "assign": []}
    for _ in range(repeats + 1):
        idx = torch.randint(rows, (BATCH_ULB,), generator=generator)
        net_logits = torch.randn(BATCH_ULB, classes, generator=generator)
        probs = torch.softmax(net_logits, dim=-1)
        t0 = time.perf_counter()
        store.read(idx)
        t1 = time.perf_counter()
        store.descend(idx, probs, step=0.78)
        t2 = time.perf_counter()
        store.assign(idx, net_logits)
        t3 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key].append(dt * 1000.0)
    del store
    gc.collect()
    return {key: statistics.median(values[1:]) for key, values in times.items()}


def store_rows(repeats: int, rows: int, classes: int) -> List[Dict[str, object]]:
    """One CSV row per option and world size."""
    batch_fp32 = BATCH_ULB * classes * 4
    out: List[Dict[str, object]] = []
    for name, dtype, place in OPTIONS:
        ms = time_store_ops(dtype, place, repeats, rows, classes)
        full = rows * classes * element_bytes(dtype)
        for ranks in RANKS:
            out.append({"option": name, "dtype": dtype, "place": place, "ranks": ranks,
                        "gpu_bytes_per_rank": full if place == "device" else batch_fp32,
                        "host_bytes_per_rank": full if place == "cpu_pinned" else 0,
                        "exchanged_bytes_per_step_per_rank": 0,
                        "step_ms": round(ms["read"] + ms["descend"], 3),
                        "read_ms": round(ms["read"], 3), "descend_ms": round(ms["descend"], 3),
                        "assign_ms": round(ms["assign"], 3), "measured": "yes"})
        print(f"{name}: {ms}", flush=True)
    for name, dtype in SHARDED:
        for ranks in RANKS:
            shard = math.ceil(rows / ranks) * classes * element_bytes(dtype)
            # Rows of a rank's batch owned by the other ranks come in for the read and go back
            # after the D2 step.
            exchanged = 2 * BATCH_ULB * classes * element_bytes(dtype) * (ranks - 1) / ranks
            out.append({"option": name, "dtype": dtype, "place": "sharded", "ranks": ranks,
                        "gpu_bytes_per_rank": shard, "host_bytes_per_rank": 0,
                        "exchanged_bytes_per_step_per_rank": int(exchanged), "step_ms": "",
                        "read_ms": "", "descend_ms": "", "assign_ms": "",
                        "measured": "no (computed; needs multi-process training)"})
    return out


def store_table(rows: List[Dict[str, object]], threads: int, repeats: int, num_rows: int,
                classes: int) -> str:
    lines = [
        f"# Pseudo-label store of {num_rows} x {classes} (synthetic; ImageNet-1k size by default)",
        "",
        f"Store ms per training step: median over {repeats} random unlabeled batches of "
        f"{BATCH_ULB} rows (USB's ImageNet batch_size 64 x uratio 1) of `read` + `descend`, "
        f"measured on this project's 2-core CPU machine with {threads} torch thread(s) and no GPU; "
        "`assign` is one batch of R2's store-wide reprediction, not a per-step cost. Without CUDA "
        "\"device\" and \"pinned CPU\" are the same plain CPU memory, so the host-to-GPU copy "
        f"of a batch's rows ({BATCH_ULB} x {classes} x 4 B = {BATCH_ULB * classes * 4 / 1e3:.0f} KB "
        "each way) is not in these times. Bytes are computed (logits only; the true labels kept "
        f"for reporting are {num_rows * 8 / 1e6:.1f} MB more). "
        "\"sharded\" is not run: the plugin has no multi-process training yet.",
        "",
        "| option | ranks | GPU GB / rank | host GB / rank | exchanged KB / step / rank | "
        "store ms / step | read ms | descend ms | assign ms (one batch) | measured |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        def num(key: str, scale: float, digits: int) -> str:
            value = r[key]
            return "" if value == "" else f"{float(value) / scale:.{digits}f}"

        lines.append(f"| {r['option']} | {r['ranks']} | {num('gpu_bytes_per_rank', GB, 4)} | "
                     f"{num('host_bytes_per_rank', GB, 4)} | "
                     f"{num('exchanged_bytes_per_step_per_rank', 1e3, 0)} | {r['step_ms']} | "
                     f"{r['read_ms']} | {r['descend_ms']} | {r['assign_ms']} | {r['measured']} |")
    return "\n".join(lines) + "\n"


def digits_run(config: str, dtype: str, seed: int, out: str, threads: int) -> Dict[str, object]:
    """One launcher run in its own process; its final and best top-1 from the launcher's line."""
    name = f"r2d2_{dtype}_seed{seed}"
    command = [sys.executable, "-m", "r2d2_plugin.train", "--c", config,
               "--r2d2_store_dtype", dtype, "--seed", str(seed),
               "--save_dir", os.path.join(out, "runs"), "--save_name", name]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    with open(os.path.join(out, "runs", f"{name}.log"), "w") as f:
        f.write(proc.stdout + proc.stderr)
    found = re.search(r"final top-1 ([0-9.]+)\s+best top-1 ([0-9.]+)", proc.stdout)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"{shlex.join(command)} failed (exit {proc.returncode}); see "
                           f"{os.path.join(out, 'runs', name + '.log')}")
    final, best = float(found.group(1)), float(found.group(2))
    return {"dtype": dtype, "seed": seed, "final_top1": final, "best_top1": best,
            "error_pct": round(100 * (1 - final), 2), "best_error_pct": round(100 * (1 - best), 2),
            "seconds": round(seconds, 1), "threads": threads}


def digits_table(rows: List[Dict[str, str]], dtypes: Sequence[str], config: str) -> str:
    threads = sorted({r["threads"] for r in rows})
    lines = ["# Store dtype on digits (40 labels): error % of the final EMA weights", "",
             f"Each run: `OMP_NUM_THREADS={'/'.join(threads)} python -m r2d2_plugin.train --c {config} "
             "--r2d2_store_dtype DTYPE --seed SEED` (plus its save_dir / save_name), one run at a "
             "time on this project's 2-core CPU machine; the 596-image eval set. Made by the "
             "command in `COMMAND_digits`; per-run numbers in `digits.csv`.", "",
             "| store dtype | error % final (mean ± std) | error % best (mean ± std) | seeds | "
             "per seed (final) |", "|---|---|---|---|---|"]
    for dtype in dtypes:
        mine = sorted((r for r in rows if r["dtype"] == dtype), key=lambda r: int(r["seed"]))
        if not mine:
            continue
        final = [float(r["error_pct"]) for r in mine]
        best = [float(r["best_error_pct"]) for r in mine]
        spread = lambda v: f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"
        lines.append(f"| {dtype} | {spread(final)} | {spread(best)} | {len(mine)} | "
                     f"{', '.join(f'{v:.2f}' for v in final)} |")
    return "\n".join(lines) + "\n"


def read_csv(path: str) -> List[Dict[str, str]]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: str, fields: Sequence[str], rows: Sequence[Dict[str, object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m r2d2_plugin.scale")
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=50, help="timed batches per option")
    parser.add_argument("--rows", type=int, default=IMAGENET_ROWS)
    parser.add_argument("--classes", type=int, default=IMAGENET_CLASSES)
    parser.add_argument("--digits", action="store_true", help="the digits dtype comparison instead")
    parser.add_argument("--c", default="configs/r2d2_digits_40.yaml")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    args = parser.parse_args(argv)
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    threads_env = os.environ.get("OMP_NUM_THREADS")
    command = ((f"OMP_NUM_THREADS={threads_env} " if threads_env and not args.digits else "")
               + "python -m r2d2_plugin.scale " + shlex.join(argv) + "\n")
    if args.digits:
        with open(os.path.join(args.out, "COMMAND_digits"), "w") as f:
            f.write(command)
        path = os.path.join(args.out, "digits.csv")
        rows = read_csv(path)
        for dtype in args.dtypes:
            for seed in args.seeds:
                if any(r["dtype"] == dtype and int(r["seed"]) == seed for r in rows):
                    continue
                rows.append(digits_run(args.c, dtype, seed, args.out, args.threads))
                print(rows[-1], flush=True)
                write_csv(path, DIGITS_FIELDS, rows)
        with open(os.path.join(args.out, "digits.md"), "w") as f:
            f.write(digits_table(rows, args.dtypes, args.c))
        return
    with open(os.path.join(args.out, "COMMAND"), "w") as f:
        f.write(command)
    threads = torch.get_num_threads()
    rows = store_rows(args.repeats, args.rows, args.classes)
    write_csv(os.path.join(args.out, "store.csv"), STORE_FIELDS, rows)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(store_table(rows, threads, args.repeats, args.rows, args.classes))


if __name__ == "__main__":
    main()
