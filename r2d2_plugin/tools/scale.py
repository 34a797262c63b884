"""Store storage options at ImageNet size, and their accuracy effect on digits.

    python -m r2d2_plugin.tools.scale --out results/scale                 # ImageNet-size store
    torchrun --standalone --nproc_per_node=2 -m r2d2_plugin.tools.scale --distributed --out results/scale
    python -m r2d2_plugin.tools.scale --out results/scale --digits        # bf16 / fp16 vs fp32 on digits

Store mode: a synthetic ``PseudoLabelStore`` of ImageNet-1k size (1 281 167 unlabeled rows x
1000 classes; random indices and logits, no images), one option at a time (created, timed,
freed). For each one-process option it writes the bytes kept on the GPU and on the host and the
measured time of the store's work in one training step on this machine: ``read`` + ``descend``
of one unlabeled batch, and one ``assign`` of a batch (R2 assigns the whole store batch by batch
at each reprediction, not every step). The batch is USB's ImageNet batch: ``batch_size`` 64,
``uratio`` 1, so 64 unlabeled rows per step and process. Writes ``table.md``, ``store.csv``,
``COMMAND``.

Distributed mode (under torchrun): the replicated and the sharded store, fp32 and bf16, each
process timing the step's store work as ``R2D2`` does it under DDP; bytes per process measured
for the processes run and computed for 8. Writes ``distributed.md``, ``distributed.csv``,
``COMMAND_distributed``.

Digits mode: ``python -m r2d2_plugin.cli.train --c configs/r2d2_digits_40.yaml --r2d2_store_dtype D
--seed S`` for every dtype and seed, one process at a time with ``OMP_NUM_THREADS`` threads; a run
already in ``digits.csv`` is not run again. Writes ``digits.csv``, ``digits.md``,
``COMMAND_digits``; run folders and console logs under ``runs/`` (not committed).
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

import torch.distributed as dist

from ..core.collectives import gather_rows
from ..core.sharded_store import ShardedPseudoLabelStore
from ..core.store import STORE_DTYPES, PseudoLabelStore
from .common import STD_NOTE, mean_pm_std, read_rows, run_tool, write_command, write_rows

IMAGENET_ROWS, IMAGENET_CLASSES = 1_281_167, 1000
BATCH_ULB = 64  # USB's ImageNet setting: batch_size 64 x uratio 1 unlabeled rows per step
# Under torchrun: the options that need the process group; 8 processes are computed.
COMPUTED_RANKS = (8,)
GB = 1e9
# (name, dtype, place) of the options that run in one process.
OPTIONS = [("fp32 on device", "fp32", "device"), ("bf16 on device", "bf16", "device"),
           ("fp16 on device", "fp16", "device"), ("fp32 pinned CPU", "fp32", "cpu_pinned"),
           ("bf16 pinned CPU", "bf16", "cpu_pinned")]
DISTRIBUTED = [("fp32 replicated", "fp32", "device"), ("fp32 sharded", "fp32", "sharded"),
               ("bf16 replicated", "bf16", "device"), ("bf16 sharded", "bf16", "sharded")]
STORE_FIELDS = ["option", "dtype", "place", "ranks", "gpu_bytes_per_rank", "host_bytes_per_rank",
                "exchanged_bytes_per_step_per_rank", "step_ms", "read_ms", "descend_ms",
                "assign_ms", "measured"]
DIGITS_FIELDS = ["dtype", "seed", "final_top1", "best_top1", "error_pct", "best_error_pct",
                 "seconds", "threads"]


def element_bytes(dtype: str) -> int:
    return torch.empty(0, dtype=STORE_DTYPES[dtype]).element_size()


def time_store_ops(dtype: str, place: str, repeats: int, rows: int, classes: int,
                   device: str = "cpu") -> Dict[str, float]:
    """Median milliseconds of ``read`` + ``descend`` and of ``assign`` for one unlabeled batch
    on a ``rows`` x ``classes`` store computing on ``device``, with random indices (each repeat a
    new batch, on ``device`` as USB's batches are). On CUDA every time waits for the GPU, and a
    ``cpu_pinned`` store's host-to-GPU row copies are inside ``read`` and ``descend``."""
    generator = torch.Generator().manual_seed(0)
    store = PseudoLabelStore(rows, classes, torch.zeros(rows, dtype=torch.long), dtype, place)
    store.logits.normal_(generator=generator)
    store.to(torch.device(device))
    wait = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times: Dict[str, List[float]] = {"read": [], "descend": [], "assign": []}
    for _ in range(repeats + 1):
        idx = torch.randint(rows, (BATCH_ULB,), generator=generator).to(device)
        net_logits = torch.randn(BATCH_ULB, classes, generator=generator).to(device)
        probs = torch.softmax(net_logits, dim=-1)
        wait()
        t0 = time.perf_counter()
        store.read(idx)
        wait()
        t1 = time.perf_counter()
        store.descend(idx, probs, step=0.78)
        wait()
        t2 = time.perf_counter()
        store.assign(idx, net_logits)
        wait()
        t3 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key].append(dt * 1000.0)
    del store
    gc.collect()
    return {key: statistics.median(values[1:]) for key, values in times.items()}


def store_rows(repeats: int, rows: int, classes: int, device: str = "cpu") -> List[Dict[str, object]]:
    """One CSV row per one-process option, timed on ``device``."""
    batch_fp32 = BATCH_ULB * classes * 4
    out: List[Dict[str, object]] = []
    for name, dtype, place in OPTIONS:
        ms = time_store_ops(dtype, place, repeats, rows, classes, device)
        full = rows * classes * element_bytes(dtype)
        out.append({"option": name, "dtype": dtype, "place": place, "ranks": 1,
                    "gpu_bytes_per_rank": full if place == "device" else batch_fp32,
                    "host_bytes_per_rank": full if place == "cpu_pinned" else 0,
                    "exchanged_bytes_per_step_per_rank": 0,
                    "step_ms": round(ms["read"] + ms["descend"], 3),
                    "read_ms": round(ms["read"], 3), "descend_ms": round(ms["descend"], 3),
                    "assign_ms": round(ms["assign"], 3), "measured": "yes"})
        print(f"{name}: {ms}", flush=True)
    return out


def exchanged_bytes(place: str, ranks: int, classes: int) -> int:
    """Payload a process receives per step under DDP: the other processes' batch indices and
    weak-view probabilities (gathered for the D2 step; both places), and for ``sharded`` the
    all-reduce of every process's batch rows in ``read``."""
    gathered = (ranks - 1) * BATCH_ULB * (classes * 4 + 8)
    return gathered + (ranks * BATCH_ULB * classes * 4 if place == "sharded" and ranks > 1 else 0)


DISTRIBUTED_INTRO = (
    "Under DDP (`torchrun`, gloo, one CPU process per rank on this 2-core machine), median over "
    "`--repeats` random batches of 64 unlabeled rows per process: the store's work "
    "in one training step as R2D2 does it, timed with the processes in step: `read` of the "
    "process's own batch (sharded: indices gathered, rows all-reduced from their owners) and "
    "`descend` of every process's batch after gathering indices and weak-view probabilities "
    "(\"descend ms\" includes that gather). \"replicated\" is `r2d2_store_device: device` (every "
    "process keeps every row), \"sharded\" is `r2d2_store_device: sharded`. Bytes per rank are "
    "measured (`nbytes` of the kept logits) for the processes run and computed for 8; exchanged "
    "KB is the payload a process receives per step (computed). The processes share 2 cores, so "
    "the times are upper bounds of the store's cost, not GPU times.")


def distributed_rows(repeats: int, rows: int, classes: int) -> List[Dict[str, object]]:
    """Under torchrun: for each option of ``DISTRIBUTED``, the store's per-step work as R2D2 does
    it (``read`` of this process's batch, ``gather_rows`` + ``descend`` of every process's batch),
    timed with the processes in step; the bytes of the store each process holds, measured, and,
    for ``COMPUTED_RANKS``, computed. Rows returned on rank 0."""
    world, rank = dist.get_world_size(), dist.get_rank()
    out: List[Dict[str, object]] = []
    for name, dtype, place in DISTRIBUTED:
        labels = torch.zeros(rows, dtype=torch.long)
        store = (ShardedPseudoLabelStore(rows, classes, labels, dtype) if place == "sharded"
                 else PseudoLabelStore(rows, classes, labels, dtype, place))
        generator = torch.Generator().manual_seed(rank)
        store.logits.normal_(generator=generator)
        read_ms, descend_ms = [], []
        for _ in range(repeats + 1):
            idx = torch.randint(rows, (BATCH_ULB,), generator=generator)
            probs = torch.softmax(torch.randn(BATCH_ULB, classes, generator=generator), dim=-1)
            dist.barrier()
            t0 = time.perf_counter()
            store.read(idx)
            t1 = time.perf_counter()
            store.descend(*gather_rows(idx, probs), step=0.78)
            t2 = time.perf_counter()
            read_ms.append((t1 - t0) * 1000.0)
            descend_ms.append((t2 - t1) * 1000.0)
        held = store.nbytes()
        del store
        gc.collect()
        read, descend = statistics.median(read_ms[1:]), statistics.median(descend_ms[1:])
        print(f"rank {rank} {name}: read {read:.3f} ms, gather + descend {descend:.3f} ms", flush=True)
        for ranks in (world, *COMPUTED_RANKS):
            measured = ranks == world
            out.append({"option": name, "dtype": dtype, "place": place, "ranks": ranks,
                        "gpu_bytes_per_rank": held if measured else
                        (math.ceil(rows / ranks) if place == "sharded" else rows) * classes * element_bytes(dtype),
                        "host_bytes_per_rank": 0,
                        "exchanged_bytes_per_step_per_rank": exchanged_bytes(place, ranks, classes),
                        "step_ms": round(read + descend, 3) if measured else "",
                        "read_ms": round(read, 3) if measured else "",
                        "descend_ms": round(descend, 3) if measured else "", "assign_ms": "",
                        "measured": f"yes ({world} gloo processes on the CPU)" if measured
                        else "bytes computed"})
    return out


def store_table(rows: List[Dict[str, object]], threads: int, repeats: int, num_rows: int,
                classes: int, intro: str = "") -> str:
    lines = [
        f"# Pseudo-label store of {num_rows} x {classes} (synthetic; ImageNet-1k size by default)",
        "",
        intro or (f"Store ms per training step: median over {repeats} random unlabeled batches of "
        f"{BATCH_ULB} rows (USB's ImageNet batch_size 64 x uratio 1) of `read` + `descend`, "
        f"measured on this project's 2-core CPU machine with {threads} torch thread(s) and no GPU; "
        "`assign` is one batch of R2's store-wide reprediction, not a per-step cost. Without CUDA "
        "\"device\" and \"pinned CPU\" are the same plain CPU memory, so the host-to-GPU copy "
        f"of a batch's rows ({BATCH_ULB} x {classes} x 4 B = {BATCH_ULB * classes * 4 / 1e3:.0f} KB "
        "each way) is not in these times. Bytes are computed (logits only; the true labels kept "
        f"for reporting are {num_rows * 8 / 1e6:.1f} MB more). One process; the replicated and "
        "sharded stores under DDP are in `distributed.md`."),
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
    command = [sys.executable, "-m", "r2d2_plugin.cli.train", "--c", config,
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
             f"Each run: `OMP_NUM_THREADS={'/'.join(threads)} python -m r2d2_plugin.cli.train --c {config} "
             "--r2d2_store_dtype DTYPE --seed SEED` (plus its save_dir / save_name) on this "
             "project's 2-core CPU machines; the 596-image eval set. Made by the "
             "command in `COMMAND_digits`; per-run numbers in `digits.csv`.", "",
             f"Error %: {STD_NOTE}.", "",
             "| store dtype | error % final | error % best | seeds | "
             "per seed (final) |", "|---|---|---|---|---|"]
    for dtype in dtypes:
        mine = sorted((r for r in rows if r["dtype"] == dtype), key=lambda r: int(r["seed"]))
        if not mine:
            continue
        final = [float(r["error_pct"]) for r in mine]
        best = [float(r["best_error_pct"]) for r in mine]
        lines.append(f"| {dtype} | {mean_pm_std(final)} | {mean_pm_std(best)} | {len(mine)} | "
                     f"{', '.join(f'{v:.2f}' for v in final)} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m r2d2_plugin.tools.scale")
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=50, help="timed batches per option")
    parser.add_argument("--rows", type=int, default=IMAGENET_ROWS)
    parser.add_argument("--classes", type=int, default=IMAGENET_CLASSES)
    parser.add_argument("--digits", action="store_true", help="the digits dtype comparison instead")
    parser.add_argument("--distributed", action="store_true",
                        help="under torchrun: the replicated and sharded stores across the processes")
    parser.add_argument("--c", default="configs/r2d2_digits_40.yaml")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    args = parser.parse_args(argv)
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    threads_env = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads_env} " if threads_env and not args.digits else ""
    module = "r2d2_plugin.tools.scale"
    if args.digits:
        write_command(args.out, module, argv, "COMMAND_digits")
        path = os.path.join(args.out, "digits.csv")
        rows = read_rows(path)
        for dtype in args.dtypes:
            for seed in args.seeds:
                if any(r["dtype"] == dtype and int(r["seed"]) == seed for r in rows):
                    continue
                rows.append(digits_run(args.c, dtype, seed, args.out, args.threads))
                print(rows[-1], flush=True)
                write_rows(path, DIGITS_FIELDS, rows)
        with open(os.path.join(args.out, "digits.md"), "w") as f:
            f.write(digits_table(read_rows(path), args.dtypes, args.c))  # as read back: strings
        return
    if args.distributed:
        dist.init_process_group("gloo")
        rows = distributed_rows(args.repeats, args.rows, args.classes)
        if dist.get_rank() == 0:
            write_command(args.out, module, argv, "COMMAND_distributed", prefix,
                          f"torchrun --standalone --nproc_per_node={dist.get_world_size()}")
            write_rows(os.path.join(args.out, "distributed.csv"), STORE_FIELDS, rows)
            with open(os.path.join(args.out, "distributed.md"), "w") as f:
                f.write(store_table(rows, torch.get_num_threads(), args.repeats, args.rows, args.classes,
                                    DISTRIBUTED_INTRO))
        dist.destroy_process_group()
        return
    write_command(args.out, module, argv, prefix=prefix)
    threads = torch.get_num_threads()
    rows = store_rows(args.repeats, args.rows, args.classes)
    write_rows(os.path.join(args.out, "store.csv"), STORE_FIELDS, rows)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(store_table(rows, threads, args.repeats, args.rows, args.classes))


if __name__ == "__main__":
    run_tool(main)
