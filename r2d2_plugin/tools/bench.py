"""Run several algorithms x label counts x seeds on one config through the launcher and tabulate.

    python -m r2d2_plugin.tools.bench --c configs/r2d2_digits_40.yaml --num_labels 40 100 \\
        --algorithms r2d2 supervised fixmatch --seeds 0 1 2 --jobs 2 --out results/digits

Every run uses the config's split, net, batch sizes and iteration budget; only ``algorithm``,
``num_labels``, ``seed`` and ``save_name`` change (other ``--option value`` pairs go to every
run). Each run is a fresh spawned process; ``--jobs`` of them run side by side. A run already in
``runs.csv`` is not run again, so an interrupted suite resumes; a command asking for only some
of a folder's runs (rows deleted from ``runs.csv`` to re-run them) leaves the folder's
``COMMAND``, table and plots those of its whole suite. Writes to ``--out``:
``runs.csv`` (one row per run), ``table.md`` (mean ± std error % per label count, cost of
R2-D2), ``curves/<algorithm>_<num_labels>_seed<seed>.csv``, ``top1_vs_iteration.png``,
``r2d2_pseudo_labels.png`` (when r2d2 ran), ``COMMAND``; run folders and console logs under
``runs/`` (not committed). A config path may hold ``{num_labels}`` (USB's one config per dataset
and label count): each label count then reads its own file.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import os
import resource
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from semilearn.core.utils import ALGORITHMS

from ..algorithms.r2d2 import R2D2
from ..cli.config import check_algorithm, get_config
from ..cli.train import run
from ..core.schedule import StageSchedule
from ..core.store import STORE_DTYPES
from ..errors import ConfigError
from ..usb.datasets import npz_num_labels
from .common import (STD_NOTE, mean_pm_std, read_command, read_rows, run_tool, spawned_runs,
                     write_command, write_rows)

MODULE = "r2d2_plugin.tools.bench"

FIELDS = ["algorithm", "num_labels", "seed", "error_pct", "best_top1", "final_top1",
          "train_seconds", "step_seconds", "cpu_seconds", "cpu_step_seconds", "torch_threads",
          "process_peak_rss_mb", "gpu_peak_mb"]


def run_name(algorithm: str, num_labels: int, seed: int) -> str:
    """A run's folder and file name."""
    return f"{algorithm}_{num_labels}_seed{seed}"


def options_for(algorithm: str, extra: Sequence[str]) -> List[str]:
    """``extra`` without the ``--r2d2_* value`` pairs when ``algorithm`` is not R2-D2 (USB's
    baselines do not accept them)."""
    if issubclass(ALGORITHMS[algorithm], R2D2):
        return list(extra)
    kept, skip = [], False
    for token in extra:
        if token.startswith("--r2d2_"):
            skip = "=" not in token
        elif skip:
            skip = False
        else:
            kept.append(token)
    return kept


# What every algorithm of a suite shares, whichever config it reads.
SHARED = ("dataset", "data_dir", "num_classes", "net", "num_train_iter", "epoch", "batch_size", "uratio",
          "eval_batch_size", "ema_m", "img_size", "crop_ratio", "num_eval_iter", "eval_split")


def for_labels(path: str, num_labels: int) -> str:
    """``path`` with ``{num_labels}`` replaced by the label count."""
    return path.replace("{num_labels}", str(num_labels))


def config_path(default: str, overrides: Sequence[str], algorithm: str, num_labels: int) -> str:
    """The YAML ``algorithm`` runs from at ``num_labels``: its ``ALGORITHM=YAML`` override, else ``default``."""
    paths = dict(o.split("=", 1) for o in overrides)
    return for_labels(paths.get(algorithm, default), num_labels)


def algorithm_configs(default: str, overrides: Sequence[str], algorithms: Sequence[str],
                      extra: Sequence[str], num_labels: int) -> Dict[str, Any]:
    """Each algorithm's parsed config for ``num_labels``: ``default`` or its ``ALGORITHM=YAML``
    override, which must agree with ``default`` on ``SHARED``."""
    configs = {}
    for algorithm in algorithms:
        path = config_path(default, overrides, algorithm, num_labels)
        configs[algorithm] = get_config(["--c", path, "--algorithm", algorithm, "--num_labels", str(num_labels),
                                         *options_for(algorithm, extra)])
        base = configs[algorithms[0]]
        differ = [k for k in SHARED if getattr(configs[algorithm], k) != getattr(base, k)]
        if differ:
            raise ConfigError(f"{path} ({algorithm}) differs from the suite's {base.c} in {', '.join(differ)}",
                              "give every algorithm of a suite the same data, net, batches and budget")
    return configs


def one_run(config: str, algorithm: str, num_labels: int, seed: int, out: str, extra: Sequence[str],
            threads: int) -> Dict[str, object]:
    """One launcher run in this (fresh, spawned) process with ``threads`` torch threads; its
    console output goes to ``out/runs/<name>.out``."""
    import torch

    torch.set_num_threads(threads)
    name = run_name(algorithm, num_labels, seed)
    argv = ["--c", config, "--algorithm", algorithm, "--seed", str(seed), "--num_labels", str(num_labels),
            "--save_dir", os.path.join(out, "runs"), "--save_name", name, *options_for(algorithm, extra)]
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    log_path = os.path.join(out, "runs", f"{name}.out")
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            results = run(argv)
        except SystemExit as err:
            raise RuntimeError(f"run {name} stopped ({err}); its output is in {log_path}") from None
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    os.makedirs(os.path.join(out, "curves"), exist_ok=True)
    shutil.copy(os.path.join(out, "runs", name, "curves.csv"), os.path.join(out, "curves", f"{name}.csv"))
    return {"algorithm": algorithm, "num_labels": results["num_labels"], "seed": seed,
            "error_pct": round(100 * (1 - results["eval/final_acc"]), 2),
            "best_top1": round(results["eval/best_acc"], 4),
            "final_top1": round(results["eval/final_acc"], 4),
            "train_seconds": round(seconds, 1), "step_seconds": round(seconds / results["num_train_iter"], 4),
            "cpu_seconds": round(cpu_seconds, 1),
            "cpu_step_seconds": round(cpu_seconds / results["num_train_iter"], 4),
            "torch_threads": threads,
            "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else ""}


def column(rows: List[Dict[str, str]], algorithm: str, key: str) -> np.ndarray:
    """``key`` of ``algorithm``'s rows, as floats."""
    return np.array([float(r[key]) for r in rows if r["algorithm"] == algorithm])


def markdown(rows: List[Dict[str, str]], title: str) -> str:
    """USB-style table: mean ± std over seeds of the error % of the final EMA weights and of
    the best evaluation (USB's published tables report the best), best per column in bold."""
    algorithms = list(dict.fromkeys(r["algorithm"] for r in rows))
    final = {a: column(rows, a, "error_pct") for a in algorithms}
    best = {a: 100 * (1 - column(rows, a, "best_top1")) for a in algorithms}
    # CPU seconds (the run's process, all its threads) do not depend on what else the machine
    # runs; wall-clock seconds do. Rows written before CPU time was recorded have only the latter.
    timing = "cpu_step_seconds" if all(r.get("cpu_step_seconds") for r in rows) else "step_seconds"
    step = {a: column(rows, a, timing).mean() for a in algorithms}

    def cell(values: Dict[str, np.ndarray], algorithm: str) -> str:
        text = mean_pm_std(values[algorithm])
        top = min(v.mean() for v in values.values())
        return f"**{text}**" if values[algorithm].mean() == top else text

    ref = step.get("fixmatch")
    lines = [f"### {title}", "", f"Error %: {STD_NOTE}; best per column in bold.", "",
             "| algorithm | error % final (mean ± std) | error % best (mean ± std) | seeds | "
             + ("CPU s / step |" if timing == "cpu_step_seconds" else "wall s / step |")
             + (" step / FixMatch step |" if ref else ""),
             "|---|---|---|---|---|" + ("---|" if ref else "")]
    for a in algorithms:
        lines.append(f"| {a} | {cell(final, a)} | {cell(best, a)} | {len(final[a])} | {step[a]:.4f} |"
                     + (f" {step[a] / ref:.2f} |" if ref else ""))
    return "\n".join(lines) + "\n"


def r2d2_cost(rows: List[Dict[str, str]], out: str, title: str) -> str:
    """Share of R2-D2's training time spent in repredictions and the store's size, read from
    the runs' checkpoints; without them (run folders are not committed), the line that
    ``out/table.md`` has under ``title``, as it was measured."""
    import torch

    shares, sizes = [], set()
    for r in rows:
        path = os.path.join(out, "runs", run_name(r["algorithm"], r["num_labels"], r["seed"]), "latest_model.pth")
        if r["algorithm"] != "r2d2" or not os.path.isfile(path):
            continue
        state = torch.load(path, map_location="cpu", weights_only=True)["r2d2"]
        shares.append(100 * state["repredict_seconds"] / float(r["train_seconds"]))
        logits = state["store"]["logits"]
        dtype = next(name for name, kind in STORE_DTYPES.items() if kind == logits.dtype)
        sizes.add((tuple(logits.shape), dtype, logits.numel() * logits.element_size()))
    if not shares:
        return measured_cost_line(out, title)
    (shape, dtype, nbytes), = sizes
    return (f"\nR2-D2 cost: repredictions take {np.mean(shares):.1f} % of training time "
            f"(mean over {len(shares)} runs); the store holds {shape[0]} x {shape[1]} {dtype} logits, "
            f"{nbytes} bytes ({nbytes / 2**20:.3f} MiB).\n")


def measured_cost_line(out: str, title: str) -> str:
    """The R2-D2 cost line of the section ``title`` of ``out/table.md`` ("" if none)."""
    path = os.path.join(out, "table.md")
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        sections = f.read().split(f"### {title}\n")
    lines = sections[1].split("\n### ")[0].splitlines() if len(sections) > 1 else []
    return next((f"\n{line}\n" for line in lines if line.startswith("R2-D2 cost:")), "")


def read_curve(path: str) -> Dict[str, np.ndarray]:
    """One run's ``curves/*.csv``: every logged key by iteration, NaN where it was not logged."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) if r[k] else np.nan for r in rows]) for k in rows[0]}


def read_curves(out: str, algorithm: str, num_labels: int) -> List[Dict[str, np.ndarray]]:
    pattern = os.path.join(out, "curves", f"{run_name(algorithm, num_labels, '*')}.csv")
    return [read_curve(path) for path in sorted(glob.glob(pattern))]


def seed_mean(curves: List[Dict[str, np.ndarray]], key: str) -> Tuple[np.ndarray, np.ndarray]:
    """Iterations where ``key`` was logged, and its mean over seeds there."""
    it = curves[0]["iteration"]
    values = np.stack([c[key] for c in curves])
    keep = ~np.isnan(values).any(axis=0)
    return it[keep], values[:, keep].mean(axis=0)


def plot(out: str, algorithms: Sequence[str], label_counts: Sequence[int], config: str,
         overrides: Sequence[str], extra: Sequence[str]) -> None:
    """Top-1 vs iteration for every algorithm; R2-D2's pseudo-label entropy and accuracy with
    the repredictions marked. One panel (row) per label count; curves are means over the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(label_counts), figsize=(6.5 * len(label_counts), 4.5), squeeze=False)
    for ax, num_labels in zip(axes[0], label_counts):
        for algorithm in algorithms:
            curves = read_curves(out, algorithm, num_labels)
            if curves:
                ax.plot(*seed_mean(curves, "eval/top-1-acc"), label=f"{algorithm} ({len(curves)} seeds)")
        ax.set(xlabel="iteration", ylabel="eval top-1 (EMA)", title=f"{num_labels} labels")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(os.path.basename(os.path.normpath(out)))
    fig.tight_layout()
    fig.savefig(os.path.join(out, "top1_vs_iteration.png"), dpi=110)
    plt.close(fig)

    with_r2d2 = [n for n in label_counts if read_curves(out, "r2d2", n)]
    if not with_r2d2:
        return
    fig, axes = plt.subplots(len(with_r2d2), 2, figsize=(11, 3.6 * len(with_r2d2)), squeeze=False)
    for row, num_labels in zip(axes, with_r2d2):
        schedule = StageSchedule.from_args(get_config(["--c", config_path(config, overrides, "r2d2", num_labels),
                                                       "--algorithm", "r2d2",
                                                       "--num_labels", str(num_labels), *extra]))
        curves = read_curves(out, "r2d2", num_labels)
        for ax, key, label in zip(row, ("r2d2/pseudo_label_entropy", "r2d2/pseudo_label_acc"),
                                  ("entropy of softmax(ỹ) (nats)", "pseudo-label accuracy")):
            logged = seed_mean(curves, key)
            ax.plot(*logged, color="C0")
            if not len(logged[0]):
                ax.text(0.5, 0.5, "not measured: the unlabeled\nimages' labels are unknown",
                        ha="center", va="center", transform=ax.transAxes)
                ax.set_yticks([])
            for i, it in enumerate(schedule.repredict_iters):
                ax.axvline(it, color="C3", ls="--", lw=0.8, label="reprediction" if i == 0 else None)
            ax.set(xlabel="iteration", ylabel=label, title=f"{num_labels} labels, {len(curves)} seeds (mean)")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle("R2-D2 pseudo-labels")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "r2d2_pseudo_labels.png"), dpi=110)
    plt.close(fig)


def suite_eta(rows: List[Dict[str, str]], todo: Sequence[tuple], jobs: int) -> str:
    """Time left for ``todo`` ((algorithm, num_labels, seed) tuples) on ``jobs`` workers, from
    the mean time of finished runs of each algorithm."""
    if not rows:
        return "unknown until the first run ends"
    overall = np.mean([float(r["train_seconds"]) for r in rows])
    left = sum(column(rows, a, "train_seconds").mean() if any(r["algorithm"] == a for r in rows)
               else overall for a, _, _ in todo)
    return f"{int(left / jobs // 60)} min"


def write_outputs(rows: List[Dict[str, str]], args: argparse.Namespace) -> str:
    """``runs.csv`` and ``table.md`` in ``args.out``; returns the table."""
    write_rows(os.path.join(args.out, "runs.csv"), FIELDS, rows)
    tables = []
    for num_labels in args.num_labels:
        some = [r for r in rows if int(r["num_labels"]) == num_labels]
        if some:
            where = "the validation split" if args.eval_split == "val" else "the eval set"
            title = f"{args.dataset}, {num_labels} labels: error % on {where}"
            tables.append(markdown(some, title) + r2d2_cost(some, args.out, title))
    table = "\n".join(tables)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table)
    return table


def parse(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """The bench's own options (``num_labels`` filled from the config when not given) and the
    ``--option value`` pairs it passes on to every run."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--c", required=True)
    parser.add_argument("--algorithms", nargs="+", default=["r2d2", "supervised", "fixmatch"])
    parser.add_argument("--num_labels", nargs="+", type=int, help="label counts (default: the config's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs in parallel, each with cpu_count // jobs torch threads")
    parser.add_argument("--algorithm_config", nargs="+", default=[], metavar="ALGORITHM=YAML",
                        help="a config of its own for an algorithm (same data, net, batches and budget)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default cpu_count // jobs)")
    parser.add_argument("--out", required=True)
    args, extra = parser.parse_known_args(argv)
    for algorithm in args.algorithms:
        check_algorithm(algorithm)
    if not args.num_labels:
        if "{num_labels}" in args.c:
            raise ConfigError(f"--c {args.c} depends on the label count", "give --num_labels")
        args.num_labels = [get_config(["--c", args.c]).num_labels]
    return args, extra


def runs_of(args: argparse.Namespace) -> Set[Tuple[str, int, int]]:
    """The (algorithm, num_labels, seed) runs a bench command asks for."""
    return {(a, n, s) for a in args.algorithms for n in args.num_labels for s in args.seeds}


def with_seeds(argv: Sequence[str], seeds: Sequence[int]) -> List[str]:
    """``argv`` with ``--seeds`` naming ``seeds`` (added at the end if ``argv`` has none)."""
    argv = list(argv)
    if "--seeds" not in argv:
        return [*argv, "--seeds", *map(str, seeds)]
    start = end = argv.index("--seeds") + 1
    while end < len(argv) and argv[end].isdigit():
        end += 1
    return [*argv[:start], *map(str, seeds), *argv[end:]]


def same_but_seeds(a: argparse.Namespace, a_extra: List[str], b: argparse.Namespace, b_extra: List[str]) -> bool:
    """Whether two bench commands for one folder ask for the same settings, whatever their seeds
    (and the jobs and threads they run with)."""
    ignored = ("seeds", "jobs", "threads", "out", "dataset", "eval_split")
    return a_extra == b_extra and ({k: v for k, v in vars(a).items() if k not in ignored}
                                   == {k: v for k, v in vars(b).items() if k not in ignored})


def check_same_settings(args: argparse.Namespace, extra: List[str], saved: argparse.Namespace,
                        saved_extra: List[str]) -> None:
    """Refuse a command whose settings differ from the ``COMMAND`` that made the folder's finished
    runs: its table would show those runs under this command's settings."""
    differ = [f"--c {saved.c}"] if args.c != saved.c else []
    if extra != saved_extra:
        differ.append(f"the options passed to every run: {' '.join(saved_extra) or 'none'}")
    ours, theirs = (dict(o.split("=", 1) for o in a.algorithm_config) for a in (args, saved))
    differ += [f"{a}'s config {theirs.get(a, saved.c)}" for a in sorted(set(args.algorithms) & set(saved.algorithms))
               if ours.get(a, args.c) != theirs.get(a, saved.c) and args.c == saved.c]
    if differ:
        raise ConfigError(f"{args.out} holds runs made with other settings (its COMMAND has "
                          f"{'; '.join(differ)})", "give this command another --out, or the "
                          "COMMAND's settings (to re-run every run, delete runs.csv and curves/)")


def suite_command(args: argparse.Namespace, extra: List[str], argv: Sequence[str],
                  done: Set[Tuple[str, int, int]]) -> Tuple[argparse.Namespace, List[str]]:
    """The command whose ``COMMAND``, ``table.md`` and plots the folder gets: this one, unless it
    asks for only some of the folder's finished runs (``done``) while the folder's ``COMMAND``
    asks for all of them and for this command's, as when some rows of a suite are re-run: that
    one then stays; or unless it adds seeds to the folder's ``COMMAND`` (the same settings, other
    seeds): then this one with the seeds of both."""
    saved = read_command(args.out, MODULE)
    if saved is not None and done:
        suite, suite_extra = parse(saved)
        check_same_settings(args, extra, suite, suite_extra)
    if saved is not None and done and not done <= runs_of(args):
        if done | runs_of(args) <= runs_of(suite):
            print(f"=== bench: {args.out} holds runs this command does not ask for; its COMMAND, "
                  "table.md and plots stay those of its COMMAND", flush=True)
            suite.out, suite.dataset, suite.eval_split = args.out, args.dataset, args.eval_split
            return suite, suite_extra
        if same_but_seeds(args, extra, suite, suite_extra):
            seeds = sorted(set(suite.seeds) | set(args.seeds))
            print(f"=== bench: {args.out} holds the same suite's other seeds; its COMMAND names seeds "
                  f"{' '.join(map(str, seeds))}", flush=True)
            write_command(args.out, MODULE, with_seeds(argv, seeds))
            return argparse.Namespace(**{**vars(args), "seeds": seeds}), extra
    write_command(args.out, MODULE, argv)
    return args, extra


def check_npz_labels(configs: Dict[int, Dict[str, argparse.Namespace]]) -> None:
    """Refuse, before any run, a label count that an ``npz`` file (which brings its own labeled
    set) does not have."""
    counts: Dict[str, int] = {}  # one read of each file
    for num_labels, by_algorithm in configs.items():
        for config in by_algorithm.values():
            if config.dataset != "npz":
                continue
            if config.data_dir not in counts:
                counts[config.data_dir] = npz_num_labels(config.data_dir)
            found = counts[config.data_dir]
            if found != num_labels:
                raise ConfigError(f"{config.data_dir} leaves {found} labeled images for training, not "
                                  f"{num_labels} (npz data brings its own labeled set)",
                                  f"pass --num_labels {found}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parse(argv)
    configs = {n: algorithm_configs(args.c, args.algorithm_config, args.algorithms, extra, n)
               for n in args.num_labels}
    config = configs[args.num_labels[0]][args.algorithms[0]]
    check_npz_labels(configs)
    args.dataset, args.eval_split = config.dataset, config.eval_split
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    os.makedirs(args.out, exist_ok=True)
    rows = read_rows(os.path.join(args.out, "runs.csv"))
    done = {(r["algorithm"], int(r["num_labels"]), int(r["seed"])) for r in rows}
    suite, suite_extra = suite_command(args, extra, argv, done)
    todo = [(a, n, s) for n in args.num_labels for s in args.seeds for a in args.algorithms
            if (a, n, s) not in done]
    order = {a: i for i, a in enumerate(suite.algorithms)}

    def rank(row: Dict[str, str]) -> tuple:
        return int(row["num_labels"]), order.get(row["algorithm"], len(order)), row["algorithm"], int(row["seed"])

    rows.sort(key=rank)

    print(f"=== bench: {len(todo)} runs to do ({len(done)} done), {args.jobs} at a time with {threads} "
          f"torch thread(s) each; suite ETA {suite_eta(rows, todo, args.jobs)}", flush=True)
    left = list(todo)
    tasks = [(configs[n][a].c, a, n, s, args.out, extra, threads) for a, n, s in todo]
    for i, (task, result) in enumerate(spawned_runs(args.jobs, one_run, tasks), 1):
        row = {k: str(v) for k, v in result.items()}
        rows.append(row)
        rows.sort(key=rank)
        write_outputs(rows, suite)
        left.remove(task[1:4])
        print(f"=== bench {i}/{len(todo)}: {run_name(row['algorithm'], row['num_labels'], row['seed'])} "
              f"error {row['error_pct']} % in {row['train_seconds']} s; "
              f"suite ETA {suite_eta(rows, left, args.jobs)}", flush=True)
    table = write_outputs(rows, suite)
    plot(args.out, suite.algorithms, suite.num_labels, suite.c, suite.algorithm_config, suite_extra)
    print(table)


if __name__ == "__main__":
    run_tool(main)
