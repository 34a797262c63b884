"""Run several algorithms x seeds on the same config through the launcher and tabulate them.

    python -m r2d2_plugin.bench --c configs/r2d2_digits_40.yaml \\
        --algorithms r2d2 supervised fixmatch --seeds 0 1 2 --out results/digits_40

Every run uses the config's split, net, batch sizes and iteration budget; only ``algorithm``,
``seed`` and ``save_name`` change. A run already in ``runs.csv`` is not run again, so an
interrupted suite resumes. Writes to ``--out``: ``runs.csv`` (one row per run), ``table.md``
(mean ± std error %), ``curves/<algorithm>_seed<seed>.csv``, ``top1_vs_iteration.png``,
``r2d2_pseudo_labels.png`` (when r2d2 ran) and ``COMMAND``.
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import resource
import shlex
import shutil
import sys
import time
from typing import Dict, List, Sequence

import numpy as np

from .config import get_config
from .schedule import StageSchedule

from .train import run

FIELDS = ["algorithm", "seed", "num_labels", "error_pct", "best_top1", "final_top1",
          "train_seconds", "step_seconds", "process_peak_rss_mb"]


def read_rows(path: str) -> List[Dict[str, str]]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def one_run(config: str, algorithm: str, seed: int, out: str, extra: Sequence[str]) -> Dict[str, object]:
    name = f"{algorithm}_seed{seed}"
    argv = ["--c", config, "--algorithm", algorithm, "--seed", str(seed),
            "--save_dir", os.path.join(out, "runs"), "--save_name", name, *extra]
    start = time.perf_counter()
    results = run(argv)
    seconds = time.perf_counter() - start
    os.makedirs(os.path.join(out, "curves"), exist_ok=True)
    shutil.copy(os.path.join(out, "runs", name, "curves.csv"), os.path.join(out, "curves", f"{name}.csv"))
    return {"algorithm": algorithm, "seed": seed, "num_labels": results["num_labels"],
            "error_pct": round(100 * (1 - results["eval/final_acc"]), 2),
            "best_top1": round(results["eval/best_acc"], 4),
            "final_top1": round(results["eval/final_acc"], 4),
            "train_seconds": round(seconds, 1), "step_seconds": round(seconds / results["num_train_iter"], 4),
            "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def column(rows: List[Dict[str, str]], algorithm: str, key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in rows if r["algorithm"] == algorithm])


def markdown(rows: List[Dict[str, str]], title: str) -> str:
    """USB-style table: mean ± std over seeds of the error % of the final EMA weights and of
    the best evaluation (USB's published tables report the best), best per column in bold."""
    algorithms = list(dict.fromkeys(r["algorithm"] for r in rows))
    final = {a: column(rows, a, "error_pct") for a in algorithms}
    best = {a: 100 * (1 - column(rows, a, "best_top1")) for a in algorithms}
    step = {a: column(rows, a, "step_seconds").mean() for a in algorithms}

    def cell(values: Dict[str, np.ndarray], algorithm: str) -> str:
        text = f"{values[algorithm].mean():.2f} ± {values[algorithm].std():.2f}"
        top = min(v.mean() for v in values.values())
        return f"**{text}**" if values[algorithm].mean() == top else text

    ref = step.get("fixmatch")
    lines = [f"### {title}", "",
             "| algorithm | error % final (mean ± std) | error % best (mean ± std) | seeds | s / step |"
             + (" step / FixMatch step |" if ref else ""),
             "|---|---|---|---|---|" + ("---|" if ref else "")]
    for a in algorithms:
        lines.append(f"| {a} | {cell(final, a)} | {cell(best, a)} | {len(final[a])} | {step[a]:.4f} |"
                     + (f" {step[a] / ref:.2f} |" if ref else ""))
    return "\n".join(lines) + "\n"


def r2d2_cost(rows: List[Dict[str, str]], out: str) -> str:
    """Share of R2-D2's training time spent in repredictions and the store's size, read from
    the runs' checkpoints."""
    import torch

    shares, sizes = [], set()
    for r in rows:
        path = os.path.join(out, "runs", f"{r['algorithm']}_seed{r['seed']}", "latest_model.pth")
        if r["algorithm"] != "r2d2" or not os.path.isfile(path):
            continue
        state = torch.load(path, map_location="cpu", weights_only=True)["r2d2"]
        shares.append(100 * state["repredict_seconds"] / float(r["train_seconds"]))
        logits = state["store"]["logits"]
        sizes.add((tuple(logits.shape), logits.numel() * logits.element_size()))
    if not shares:
        return ""
    (shape, nbytes), = sizes
    return (f"\nR2-D2 cost: repredictions take {np.mean(shares):.1f} % of training time "
            f"(mean over {len(shares)} runs); the store holds {shape[0]} x {shape[1]} fp32 logits, "
            f"{nbytes} bytes ({nbytes / 2**20:.3f} MiB).\n")


def read_curves(out: str, algorithm: str) -> List[Dict[str, np.ndarray]]:
    curves = []
    for path in sorted(glob.glob(os.path.join(out, "curves", f"{algorithm}_seed*.csv"))):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        curves.append({k: np.array([float(r[k]) if r[k] else np.nan for r in rows]) for k in rows[0]})
    return curves


def seed_mean(curves: List[Dict[str, np.ndarray]], key: str):
    """Iterations where ``key`` was logged, and its mean over seeds there."""
    it = curves[0]["iteration"]
    values = np.stack([c[key] for c in curves])
    keep = ~np.isnan(values).any(axis=0)
    return it[keep], values[:, keep].mean(axis=0)


def plot(out: str, algorithms: Sequence[str], config: str, extra: Sequence[str]) -> None:
    """Top-1 vs iteration for every algorithm; R2-D2's pseudo-label entropy and accuracy with
    the repredictions marked. Curves are means over the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algorithm in algorithms:
        curves = read_curves(out, algorithm)
        if curves:
            ax.plot(*seed_mean(curves, "eval/top-1-acc"), label=f"{algorithm} ({len(curves)} seeds)")
    ax.set(xlabel="iteration", ylabel="eval top-1 (EMA)", title=os.path.basename(out))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "top1_vs_iteration.png"), dpi=120)
    plt.close(fig)

    curves = read_curves(out, "r2d2")
    if not curves:
        return
    schedule = StageSchedule.from_args(get_config(["--c", config, "--algorithm", "r2d2", *extra]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in zip(axes, ("r2d2/pseudo_label_entropy", "r2d2/pseudo_label_acc"),
                              ("mean entropy of softmax(ỹ) (nats)", "pseudo-label accuracy")):
        ax.plot(*seed_mean(curves, key), color="C0")
        for i, it in enumerate(schedule.repredict_iters):
            ax.axvline(it, color="C3", ls="--", lw=0.8, label="reprediction" if i == 0 else None)
        ax.set(xlabel="iteration", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"R2-D2 pseudo-labels ({len(curves)} seeds, mean)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "r2d2_pseudo_labels.png"), dpi=120)
    plt.close(fig)


def suite_eta(rows: List[Dict[str, str]], todo: Sequence[tuple]) -> str:
    """Time left for ``todo``, from the mean time of finished runs of each algorithm."""
    if not rows:
        return "unknown until the first run ends"
    overall = np.mean([float(r["train_seconds"]) for r in rows])
    left = sum(column(rows, a, "train_seconds").mean() if any(r["algorithm"] == a for r in rows)
               else overall for a, _ in todo)
    return f"{int(left // 60)} min"


def main(argv: Sequence[str] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m r2d2_plugin.bench")
    parser.add_argument("--c", required=True)
    parser.add_argument("--algorithms", nargs="+", default=["r2d2", "supervised", "fixmatch"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", required=True)
    args, extra = parser.parse_known_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "COMMAND"), "w") as f:
        f.write("python -m r2d2_plugin.bench " + " ".join(shlex.quote(a) for a in argv) + "\n")
    csv_path = os.path.join(args.out, "runs.csv")
    rows = read_rows(csv_path)
    todo = [(a, s) for a in args.algorithms for s in args.seeds
            if not any(r["algorithm"] == a and int(r["seed"]) == s for r in rows)]
    order = {a: i for i, a in enumerate(args.algorithms)}

    def rank(row: Dict[str, str]) -> tuple:
        return order.get(row["algorithm"], len(order)), row["algorithm"], int(row["seed"])

    rows.sort(key=rank)
    for i, (algorithm, seed) in enumerate(todo, 1):
        print(f"=== bench {i}/{len(todo)}: {algorithm} seed {seed}; suite ETA {suite_eta(rows, todo[i - 1:])}",
              flush=True)
        rows.append(one_run(args.c, algorithm, seed, args.out, extra))
        rows.sort(key=rank)
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    table = markdown(rows, f"{os.path.basename(args.c)}: error % on the eval set") + r2d2_cost(rows, args.out)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table)
    plot(args.out, args.algorithms, args.c, extra)
    print(table)


if __name__ == "__main__":
    main()
