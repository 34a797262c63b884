"""The GPU check: the plugin's CUDA path exercised and measured in one short run (docs/gpu.md).

    bash scripts/gpu_check.sh                     # installs the carried wheels, then runs this
    python -m r2d2_plugin.tools.gpu_check --out results/gpu

Parts, each recorded in ``checks.csv`` as pass or fail (a failing part does not stop the next;
none, and no training run, starts past ``--deadline`` seconds: those are recorded as skipped):

1. ``tests``: pytest on ``--tests`` (``integration_tests/test_cuda.py``, device-parametrized, and
   ``test_compat.py``); on a CUDA machine the launcher's tests train on the GPU -> ``tests.csv``.
2. ``train``: r2d2, r2d2_strong and fixmatch on the Fashion-MNIST subset in ``--data_dir`` with
   wrn_28_2 at 32x32 (``TRAIN_CONFIG``: USB's classic CIFAR setting) for ``--budget`` iterations,
   AMP off and on, one fresh process per run through bench's ``one_run`` -> ``train.csv``: USB's
   own step time (``train/run_time``: forward, losses, store step, backward, optimizer, timed
   with CUDA events) and data wait (``train/prefetch_time``), medians over the logged iterations
   of R2-D2's D2 and R2 stages (every logged iteration but the first for USB's algorithms), and
   the ratio to FixMatch's step; seconds per reprediction, peak GPU memory, final top-1.
3. ``torchrun``: the launcher under torchrun, one process per visible GPU (at most 2; NCCL with
   2). With one GPU that is a one-process launch, which the launcher runs without a process group.
4. ``store``: ``tools/scale.py``'s store options at ImageNet size on the GPU, a pinned store's
   host-to-GPU copies included -> ``store.csv``.

Writes ``gpu.md`` (the machine and every table), ``checks.csv``, ``COMMAND``; run folders and logs
go to ``<out>/runs/`` (not committed). Prints one summary line; exits non-zero when a part failed,
and at once, writing nothing, when no CUDA device is visible. Other ``--option value`` pairs go to
every training run. ``--write_data DIR`` instead writes the Fashion-MNIST subset that travels
(``scripts/fetch_gpu_wheels.sh`` runs it; no CUDA needed).
"""
from __future__ import annotations

import argparse
import gzip
import os
import platform
import re
import shlex
import statistics
import struct
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..usb import fashionmnist
from ..usb.datasets import per_class_pick
from . import scale
from .bench import one_run, run_name
from .common import run_tool, spawned_runs, write_command, write_rows

ROOT = Path(__file__).resolve().parents[2]
TRAIN_CONFIG = str(ROOT / "configs" / "classic_cv" / "r2d2_cifar10_40_0.yaml")
DATA_DIR = str(ROOT / "gpu_wheels" / "fashion-mnist")
# The subset that travels: this many images of every class from each official split.
SUBSET_PER_CLASS = {"train": 1000, "test": 200}
SUBSET_SEED = 0
NUM_LABELS = 250
TESTS = ["integration_tests/test_cuda.py", "integration_tests/test_compat.py"]
PARTS = ("tests", "train", "torchrun", "store")
NO_CUDA = ("gpu_check: no CUDA device is visible to torch {version}; this check measures the "
           "plugin's CUDA path and stops here (nothing written). Run it on a machine with an "
           "NVIDIA GPU and a CUDA build of torch (docs/gpu.md).")
CHECK_FIELDS = ["part", "status", "seconds", "detail"]
TEST_FIELDS = ["test", "outcome", "seconds"]
TRAIN_FIELDS = ["algorithm", "amp", "iterations", "step_ms", "data_wait_ms", "step_vs_fixmatch",
                "steps_timed", "wall_s_per_iteration", "repredict_s", "repredictions",
                "gpu_peak_mb", "final_top1", "best_top1"]
# USB's LoggingHook line: "<it> iteration[,] USE_EMA: <bool>, key: value, ... [BEST_EVAL_ACC ...]".
LOG_LINE = re.compile(r"\] (\d+) iteration,? USE_EMA: \w+, (.*?)\s*(?:BEST_EVAL_ACC.*)?$")


class PartFailed(RuntimeError):
    """A part that failed with some rows measured all the same."""

    def __init__(self, message: str, rows: List[Dict[str, Any]]):
        super().__init__(message)
        self.rows = rows


def print_tail(path: str, lines: int = 60) -> None:
    """The end of a failed part's log on stdout (on a lent machine, often all that comes back)."""
    with open(path, errors="replace") as f:
        print("".join(f.readlines()[-lines:]), flush=True)


def write_idx(path: str, array: np.ndarray) -> None:
    """``array`` (uint8) as a gzipped IDX file, the format of the original Fashion-MNIST files."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fashion_subset(out: str, per_class: Dict[str, int] = SUBSET_PER_CLASS,
                         source: str = fashionmnist.SYSTEM_DIR) -> Dict[str, int]:
    """``per_class[split]`` images of every class of each official split, drawn with
    ``SUBSET_SEED`` from the IDX files in ``source``, written under their original names in
    ``out``; the number of images of each split."""
    data = fashionmnist.load_fashionmnist(source, source, allow_download=False)
    os.makedirs(out, exist_ok=True)
    sizes = {}
    for split, (image_file, label_file) in fashionmnist.FILES.items():
        images, labels = data[split]
        keep = per_class_pick(labels, {c: per_class[split] for c in range(fashionmnist.CLASSES)}, SUBSET_SEED)
        write_idx(os.path.join(out, image_file + ".gz"), images[keep])
        write_idx(os.path.join(out, label_file + ".gz"), labels[keep].astype(np.uint8))
        sizes[split] = len(keep)
    return sizes


def r2d2_stages(budget: int) -> List[str]:
    """R2-D2 stage options for ``budget`` iterations: warm-up, D2 and fine-tune a fifth, a fifth
    and a tenth; R2 the rest, in the config's 4 periods."""
    warmup, d2, finetune = budget // 5, budget // 5, budget // 10
    r2 = budget - warmup - d2 - finetune
    return ["--r2d2_warmup_iter", str(warmup), "--r2d2_d2_iter", str(d2), "--r2d2_r2_iter", str(r2),
            "--r2d2_repredict_period", str(r2 // 4), "--r2d2_finetune_iter", str(finetune)]


def train_options(budget: int, data_dir: str, extra: Sequence[str]) -> List[str]:
    """Launcher options of every run (on top of ``TRAIN_CONFIG``); ``extra`` last, so it wins.
    EMA 0.99 so that a short run's EMA weights are past their initialization."""
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    return ["--dataset", "fashionmnist", "--num_classes", "10", "--data_dir", data_dir,
            "--img_size", "32", "--num_train_iter", str(budget), "--epoch", "1",
            "--num_eval_iter", str(max(1, budget // 2)), "--num_log_iter", "10", "--ema_m", "0.99",
            "--num_workers", str(workers), "--use_tensorboard", "False", *r2d2_stages(budget), *extra]


def logged_steps(log_path: str) -> List[Dict[str, float]]:
    """The values of every iteration USB's LoggingHook wrote to a run's ``log.txt``."""
    steps = []
    with open(log_path) as f:
        for line in f:
            found = LOG_LINE.search(line.rstrip())
            if found:
                pairs = (item.split(": ") for item in found.group(2).split(", "))
                steps.append({"iteration": int(found.group(1)), **{k: float(v) for k, v in pairs}})
    return steps


def steady_steps(steps: List[Dict[str, float]]) -> List[Dict[str, float]]:
    """R2-D2's logged iterations in its D2 and R2 stages (2, 3), where it reads unlabeled data;
    every logged iteration but the first for other algorithms."""
    if steps and "r2d2/stage" in steps[0]:
        return [s for s in steps if s["r2d2/stage"] in (2.0, 3.0)]
    return steps[1:]


def train_row(row: Dict[str, Any], run_dir: str, amp: bool) -> Dict[str, Any]:
    """``train.csv``'s row of one run: bench's ``one_run`` row and the run's log and checkpoint."""
    steps = logged_steps(os.path.join(run_dir, "log.txt"))
    steady = steady_steps(steps)
    state = torch.load(os.path.join(run_dir, "latest_model.pth"), map_location="cpu", weights_only=False)
    r2d2 = state.get("r2d2", {})
    count = r2d2.get("repredictions", 0)
    return {"algorithm": row["algorithm"], "amp": "on" if amp else "off",
            "iterations": steps[-1]["iteration"],
            "step_ms": round(1000 * statistics.median(s["train/run_time"] for s in steady), 2),
            "data_wait_ms": round(1000 * statistics.median(s["train/prefetch_time"] for s in steady), 2),
            "step_vs_fixmatch": "", "steps_timed": len(steady),
            "wall_s_per_iteration": row["step_seconds"],
            "repredict_s": round(r2d2["repredict_seconds"] / count, 3) if count else "",
            "repredictions": count if r2d2 else "", "gpu_peak_mb": row["gpu_peak_mb"],
            "final_top1": row["final_top1"], "best_top1": row["best_top1"]}


def train_part(args: argparse.Namespace, extra: Sequence[str], past_deadline: Callable[[], bool]
               ) -> List[Dict[str, Any]]:
    """Every algorithm, AMP off and on, one fresh process each (one at a time: step times are
    not shared with another run); none starts ``past_deadline()``."""
    if fashionmnist.find_files(args.data_dir) is None:
        raise RuntimeError(f"no Fashion-MNIST IDX files in {args.data_dir} or {fashionmnist.SYSTEM_DIR}: "
                           "run scripts/fetch_gpu_wheels.sh where PyPI is reachable and bring "
                           "gpu_wheels/ along")
    rows, failed = [], []
    threads = max(1, (os.cpu_count() or 2) // 2)
    for amp in args.amp:
        out = os.path.join(args.out, "runs", f"amp_{amp}")
        options = train_options(args.budget, args.data_dir, ["--amp", str(amp == "on"), *extra])
        for algorithm in args.algorithms:
            if past_deadline():
                failed.append(f"{algorithm} AMP {amp}: not started, past the {args.deadline:.0f} s deadline")
                continue
            task = (TRAIN_CONFIG, algorithm, NUM_LABELS, 0, out, options, threads)
            run_dir = os.path.join(out, "runs", run_name(algorithm, NUM_LABELS, 0))
            try:
                ((_, result),) = spawned_runs(1, one_run, [task])
                rows.append(train_row(result, run_dir, amp == "on"))
            except Exception as err:  # noqa: BLE001 (recorded; the other runs go on)
                traceback.print_exc()
                failed.append(f"{algorithm} AMP {amp}: {type(err).__name__}: {err}")
                continue
            print(f"gpu_check train: {rows[-1]}", flush=True)
            for row in rows:
                ref = [r["step_ms"] for r in rows if r["algorithm"] == "fixmatch" and r["amp"] == row["amp"]]
                row["step_vs_fixmatch"] = round(row["step_ms"] / ref[0], 2) if ref and ref[0] else ""
            write_rows(os.path.join(args.out, "train.csv"), TRAIN_FIELDS, rows)
    if failed:
        raise PartFailed("; ".join(failed), rows)
    return rows


def tests_part(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """pytest on ``args.tests``, one row per test from its JUnit XML report."""
    report = os.path.join(args.out, "runs", "tests.xml")
    command = [sys.executable, "-m", "pytest", "-q", f"--junitxml={report}", *args.tests]
    with open(os.path.join(args.out, "runs", "tests.log"), "w") as log:
        subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=args.tests_timeout)
    rows = []
    for case in ET.parse(report).iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = ("failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds
                   else "passed")
        rows.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                     "seconds": round(float(case.get("time", 0)), 2)})
    write_rows(os.path.join(args.out, "tests.csv"), TEST_FIELDS, rows)
    failed = [r["test"] for r in rows if r["outcome"] == "failed"]
    if failed or not rows:
        print_tail(os.path.join(args.out, "runs", "tests.log"), 120)
        raise PartFailed(f"failed: {', '.join(failed) or 'no test ran'} (runs/tests.log)", rows)
    return rows


def torchrun_part(args: argparse.Namespace, extra: Sequence[str]) -> str:
    """The launcher under torchrun with one process per visible GPU (at most 2)."""
    processes = max(1, min(2, torch.cuda.device_count()))
    budget = max(10, args.budget // 5)
    out = os.path.join(args.out, "runs", "torchrun")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "r2d2_plugin.cli.train", "--c", TRAIN_CONFIG,
               "--num_labels", str(NUM_LABELS), "--save_dir", out, "--save_name", "r2d2",
               *train_options(budget, args.data_dir, extra)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.torchrun_timeout)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "torchrun.log"), "w") as log:
        log.write(done.stdout + done.stderr)
    top1 = re.search(r"final top-1 ([0-9.]+)", done.stdout)
    placed = re.search(r"r2d2 on fashionmnist \((\w+)(?:, (\d+) processes)?\)", done.stdout)
    if done.returncode != 0 or top1 is None or placed is None:
        print_tail(os.path.join(out, "torchrun.log"))
        raise RuntimeError(f"torchrun exited {done.returncode} (runs/torchrun/torchrun.log): "
                           + " ".join((done.stderr or done.stdout).strip().splitlines()[-1:]))
    group = (f"{placed.group(2)} processes, one process group" if placed.group(2)
             else "1 process, undistributed (the launcher forms no process group for one process)")
    return (f"{processes} process(es) on {placed.group(1)}: {group}; {budget} iterations, "
            f"final top-1 {top1.group(1)}")


def store_part(args: argparse.Namespace, device: str, name: str) -> List[Dict[str, Any]]:
    rows = scale.store_rows(args.store_repeats, args.store_rows, scale.IMAGENET_CLASSES, device)
    for row in rows:
        row["measured"] = f"yes ({name})"
    write_rows(os.path.join(args.out, "store.csv"), scale.STORE_FIELDS, rows)
    return rows


def store_intro(args: argparse.Namespace, name: str) -> str:
    return (f"Store ms per training step on {name}: median over {args.store_repeats} random "
            f"batches of {scale.BATCH_ULB} unlabeled rows (USB's ImageNet batch) of `read` + "
            "`descend`, each call timed to the end of its GPU work (`torch.cuda.synchronize`); "
            "`assign` is one batch of R2's store-wide reprediction. \"device\" keeps the logits on "
            "the GPU; \"pinned CPU\" keeps them in page-locked host memory, so the batch's rows are "
            "gathered on the host and copied to the GPU in `read` and `descend` (and back in "
            "`descend`), inside these times. Bytes are computed (logits only).")


def markdown_table(rows: Sequence[Dict[str, Any]], fields: Sequence[str]) -> str:
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(str(r.get(f, "")) for f in fields) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def machine(device: str) -> str:
    if device != "cuda":
        return (f"the CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
                f"torch {torch.__version__}. NOT A GPU MEASUREMENT: a `--allow_cpu` dry run of the "
                "check's own code; its times and ratios say nothing about CUDA")
    props = torch.cuda.get_device_properties(0)
    return (f"{torch.cuda.device_count()} x {props.name} ({props.total_memory / 2**30:.0f} GiB), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
            f"Python {platform.python_version()}, {os.cpu_count()} CPU cores")


def write_report(args: argparse.Namespace, extra: Sequence[str], device: str, name: str,
                 checks: List[Dict[str, Any]], tables: Dict[str, List[Dict[str, Any]]]) -> None:
    parts = [f"# GPU check ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {machine(device)}. Made by the command in `COMMAND` (`bash scripts/gpu_check.sh` "
             "installs the carried wheels first; docs/gpu.md). One run of each, seed 0: no std.", "",
             "## Parts", "", markdown_table(checks, CHECK_FIELDS)]
    if tables.get("tests"):
        failed = [r for r in tables["tests"] if r["outcome"] == "failed"]
        counts = {o: sum(r["outcome"] == o for r in tables["tests"]) for o in ("passed", "failed", "skipped")}
        parts += ["## Tests", "", f"{' '.join(args.tests)}: {counts['passed']} passed, "
                  f"{counts['failed']} failed, {counts['skipped']} skipped (all in `tests.csv`)"
                  + (":" if failed else "."), ""]
        parts += [markdown_table(failed, TEST_FIELDS)] if failed else []
    if tables.get("train"):
        parts += ["## Training", "",
                  f"Fashion-MNIST subset ({args.data_dir}), {NUM_LABELS} labels, wrn_28_2 at 32x32, "
                  f"batch 64 + 7 x 64, {args.budget} iterations (`{TRAIN_CONFIG.split(str(ROOT) + '/')[-1]}` "
                  "with the options of `train_options` in `r2d2_plugin/tools/gpu_check.py`). step ms: "
                  "median of USB's `train/run_time` (forward, losses, store step, backward, optimizer; "
                  "CUDA events) over `steps_timed` logged iterations (R2-D2: its D2 and R2 stages); "
                  "data wait ms: median `train/prefetch_time`; wall s / iteration: the whole run "
                  "(start, data, evaluations) over its iterations; repredict s: seconds per "
                  "reprediction of the whole unlabeled set; GPU peak: `torch.cuda.max_memory_allocated`."
                  + (f" Launcher options given to every run on the command line: `{shlex.join(extra)}`."
                     if extra else ""), "", markdown_table(tables["train"], TRAIN_FIELDS)]
    if tables.get("store"):
        parts.append("#" + scale.store_table(tables["store"], torch.get_num_threads(), args.store_repeats,
                                             args.store_rows, scale.IMAGENET_CLASSES, store_intro(args, name)))
    with open(os.path.join(args.out, "gpu.md"), "w") as f:
        f.write("\n".join(parts))


def summary(checks: List[Dict[str, Any]], tables: Dict[str, List[Dict[str, Any]]], name: str,
            seconds: float) -> str:
    ok = all(c["status"] == "pass" for c in checks)
    bits = []
    for check in checks:
        if check["status"] != "pass" or check["part"] == "torchrun":
            bits.append(f"{check['part']} {check['status']}: {check['detail'][:160]}")
        elif check["part"] == "tests":
            rows = tables["tests"]
            bits.append(f"tests {sum(r['outcome'] == 'passed' for r in rows)} passed, "
                        f"{sum(r['outcome'] == 'skipped' for r in rows)} skipped")
        elif check["part"] == "train":
            ratios = [f"AMP {r['amp']} {r['step_vs_fixmatch']}" for r in tables["train"]
                      if r["algorithm"] == "r2d2"]
            bits.append(f"train {len(tables['train'])} runs, r2d2/fixmatch step {', '.join(ratios)}")
        else:
            pinned = [r["step_ms"] for r in tables["store"] if r["option"] == "fp32 pinned CPU"]
            bits.append(f"store {len(tables['store'])} options "
                        f"(fp32 pinned {pinned[0] if pinned else '?'} ms/step)")
    return f"gpu_check: {'PASS' if ok else 'FAIL'} on {name} in {seconds:.0f} s; " + "; ".join(bits)


def run_part(part: str, work: Callable[[], Any], checks: List[Dict[str, Any]]) -> Any:
    """``work()``, recorded in ``checks`` as pass (its detail: a string result, or a row count) or
    fail (its error); its rows, also those of a ``PartFailed``."""
    start = time.perf_counter()
    try:
        result = work()
        status, detail = "pass", result if isinstance(result, str) else f"{len(result)} rows"
    except PartFailed as err:
        result, status, detail = err.rows, "fail", str(err)
    except Exception as err:  # noqa: BLE001 (recorded; the next part runs)
        traceback.print_exc()
        result, status, detail = None, "fail", f"{type(err).__name__}: {err}"
    checks.append({"part": part, "status": status, "seconds": round(time.perf_counter() - start, 1),
                   "detail": detail.replace("\n", " ").replace("|", "/")})
    print(f"gpu_check {part}: {status} ({detail[:300]})", flush=True)
    return result


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m r2d2_plugin.tools.gpu_check")
    parser.add_argument("--out", default=str(ROOT / "results" / "gpu"))
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--tests", nargs="+", default=TESTS, help="pytest files or node ids")
    parser.add_argument("--tests_timeout", type=int, default=240)
    parser.add_argument("--algorithms", nargs="+", default=["r2d2", "r2d2_strong", "fixmatch"])
    parser.add_argument("--amp", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--budget", type=int, default=200, help="iterations of each training run")
    parser.add_argument("--data_dir", default=DATA_DIR)
    parser.add_argument("--torchrun_timeout", type=int, default=240)
    parser.add_argument("--store_rows", type=int, default=scale.IMAGENET_ROWS)
    parser.add_argument("--store_repeats", type=int, default=50)
    parser.add_argument("--deadline", type=float, default=420,
                        help="seconds after the start past which no part or training run starts")
    parser.add_argument("--write_data", metavar="DIR", help="write the Fashion-MNIST subset to DIR and stop")
    # Tests only: run the check's own code on the CPU. Its numbers are not GPU measurements.
    parser.add_argument("--allow_cpu", action="store_true", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args(argv)
    if args.write_data:
        sizes = write_fashion_subset(args.write_data)
        print(f"gpu_check: wrote {sizes['train']} training and {sizes['test']} test images of "
              f"Fashion-MNIST to {args.write_data}")
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        sys.exit(NO_CUDA.format(version=torch.__version__))
    name = torch.cuda.get_device_name(0) if device == "cuda" else "the CPU (dry run, not a GPU measurement)"
    start = time.perf_counter()
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    write_command(args.out, "r2d2_plugin.tools.gpu_check", argv)
    checks: List[Dict[str, Any]] = []
    tables: Dict[str, List[Dict[str, Any]]] = {}

    def past_deadline() -> bool:
        return time.perf_counter() - start > args.deadline

    work = {"tests": lambda: tests_part(args), "train": lambda: train_part(args, extra, past_deadline),
            "torchrun": lambda: torchrun_part(args, extra), "store": lambda: store_part(args, device, name)}
    for part in args.parts:
        if past_deadline():
            checks.append({"part": part, "status": "skipped", "seconds": 0,
                           "detail": f"not started, past the {args.deadline:.0f} s deadline"})
        else:
            result = run_part(part, work[part], checks)
            if isinstance(result, list):
                tables[part] = result
        write_rows(os.path.join(args.out, "checks.csv"), CHECK_FIELDS, checks)
        write_report(args, extra, device, name, checks, tables)
    line = summary(checks, tables, name, time.perf_counter() - start)
    print(line, flush=True)
    if not line.startswith("gpu_check: PASS"):
        sys.exit(1)


if __name__ == "__main__":
    run_tool(main)
