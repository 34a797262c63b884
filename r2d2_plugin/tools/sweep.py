"""Sensitivity of R2-D2 to α, β, λ and the repredict period: two grids of launcher runs.

    python -m r2d2_plugin.tools.sweep --c configs/r2d2_digits_40.yaml --seeds 0 1 --jobs 2 \\
        --out results/sensitivity_digits_40

Grid ``alpha_beta`` varies r2d2_alpha x r2d2_beta; grid ``lambda_period`` varies r2d2_lambda x
r2d2_repredict_period. Everything else is the config's. The R2 stage keeps its length, so a
period p gives R2_iter / p repredictions; each gets an lr from the config's r2d2_lr_r2 steps
stretched over the stage (lr_for_period), so the lr per iteration stays close to the config's.
Resumable like the bench: ``runs.csv`` keeps finished runs. Writes ``runs.csv``, ``table.md``
(mean error % over seeds per grid point, the config's own point marked), ``heatmaps.png`` and
``COMMAND`` to ``--out``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bench import one_run
from ..cli.config import get_config
from ..core.schedule import StageSchedule
from .common import (STD_NOTE, mean_pm_std, read_rows, run_tool, spawned_runs, write_command,
                     write_report, write_rows)

GRIDS: Dict[str, Tuple[Tuple[str, List[float]], Tuple[str, List[float]]]] = {
    "alpha_beta": (("r2d2_alpha", [0.03, 0.1, 0.3]), ("r2d2_beta", [0.0, 0.03, 0.1])),
    "lambda_period": (("r2d2_lambda", [125.0, 500.0, 2000.0]), ("r2d2_repredict_period", [75, 150, 300])),
}
FIELDS = ["grid", "x", "y", "seed", "error_pct", "final_top1", "best_top1", "train_seconds"]


def lr_for_period(schedule: StageSchedule, period: int) -> List[float]:
    """One lr per R2 period of ``period`` iterations: the config's lr at the middle of each."""
    count = max(1, schedule.r2_iter // period)
    config_period = schedule.r2_iter / len(schedule.lr_r2)
    return [schedule.lr_r2[min(int((k + 0.5) * period // config_period), len(schedule.lr_r2) - 1)]
            for k in range(count)]


def point_options(schedule: StageSchedule, xname: str, x: float, yname: str, y: float) -> List[str]:
    options = [f"--{xname}", str(x), f"--{yname}", str(y)]
    if yname == "r2d2_repredict_period":
        options += ["--r2d2_lr_r2", ",".join(str(v) for v in lr_for_period(schedule, int(y)))]
    return options


def sweep_run(config: str, grid: str, x: float, y: float, seed: int, options: List[str], out: str,
              num_labels: int) -> Dict[str, object]:
    point = os.path.join(out, "points", f"{grid}_{x:g}_{y:g}")
    row = one_run(config, "r2d2", num_labels, seed, point, options, threads=1)
    return {"grid": grid, "x": x, "y": y, "seed": seed, "error_pct": row["error_pct"],
            "final_top1": row["final_top1"], "best_top1": row["best_top1"],
            "train_seconds": row["train_seconds"]}


def table(rows: List[Dict[str, str]], defaults: Dict[str, float]) -> str:
    lines = []
    for grid, ((xname, xs), (yname, ys)) in GRIDS.items():
        lines += [f"### {grid}: error % ({STD_NOTE}), rows {xname}, columns {yname}", "",
                  f"| {xname} \\ {yname} | " + " | ".join(f"{y:g}" for y in ys) + " |",
                  "|---|" + "---|" * len(ys)]
        for x in xs:
            cells = []
            for y in ys:
                errors = [float(r["error_pct"]) for r in rows
                          if r["grid"] == grid and float(r["x"]) == x and float(r["y"]) == y]
                text = f"{mean_pm_std(errors)} ({len(errors)})" if errors else "-"
                mark = x == defaults[xname] and y == defaults[yname]
                cells.append(f"**{text}**" if mark else text)
            lines.append(f"| {x:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "Bold: the config's own setting. (n): seeds.\n"


def heatmaps(rows: List[Dict[str, str]], path: str, dataset: str, num_labels: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(GRIDS), figsize=(6 * len(GRIDS), 4.5))
    for ax, (grid, ((xname, xs), (yname, ys))) in zip(axes, GRIDS.items()):
        mean = np.full((len(xs), len(ys)), np.nan)
        for i, x in enumerate(xs):
            for j, y in enumerate(ys):
                errors = [float(r["error_pct"]) for r in rows
                          if r["grid"] == grid and float(r["x"]) == x and float(r["y"]) == y]
                if errors:
                    mean[i, j] = np.mean(errors)
        image = ax.imshow(mean, cmap="viridis_r", aspect="auto")
        for (i, j), value in np.ndenumerate(mean):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="w")
        ax.set(xticks=range(len(ys)), xticklabels=[f"{y:g}" for y in ys], xlabel=yname,
               yticks=range(len(xs)), yticklabels=[f"{x:g}" for x in xs], ylabel=xname)
        fig.colorbar(image, ax=ax, label="error % (mean over seeds)")
    fig.suptitle(f"R2-D2 sensitivity on {dataset}, {num_labels} labels (error % on the eval set)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m r2d2_plugin.tools.sweep")
    parser.add_argument("--c", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    config = get_config(["--c", args.c, "--algorithm", "r2d2"])
    schedule = StageSchedule.from_args(config)
    defaults = {"r2d2_alpha": config.r2d2_alpha, "r2d2_beta": config.r2d2_beta,
                "r2d2_lambda": config.r2d2_lambda, "r2d2_repredict_period": schedule.repredict_period}
    os.makedirs(args.out, exist_ok=True)
    write_command(args.out, "r2d2_plugin.tools.sweep", argv)
    csv_path = os.path.join(args.out, "runs.csv")
    rows = read_rows(csv_path)
    done = {(r["grid"], float(r["x"]), float(r["y"]), int(r["seed"])) for r in rows}
    todo = []
    for grid, ((xname, xs), (yname, ys)) in GRIDS.items():
        for x in xs:
            for y in ys:
                options = point_options(schedule, xname, x, yname, y)
                get_config(["--c", args.c, "--algorithm", "r2d2", *options])
                todo += [(grid, x, y, s, options) for s in args.seeds if (grid, x, y, s) not in done]
    print(f"=== sweep: {len(todo)} runs to do ({len(done)} done), {args.jobs} at a time", flush=True)
    tasks = [(args.c, g, x, y, s, o, args.out, config.num_labels) for g, x, y, s, o in todo]
    for i, (_, result) in enumerate(spawned_runs(args.jobs, sweep_run, tasks), 1):
        rows.append({k: str(v) for k, v in result.items()})
        write_rows(csv_path, FIELDS, sorted(rows, key=lambda r: (r["grid"], float(r["x"]), float(r["y"]),
                                                                 int(r["seed"]))))
        print(f"=== sweep {i}/{len(todo)}: {rows[-1]['grid']} {rows[-1]['x']} {rows[-1]['y']} "
              f"seed {rows[-1]['seed']}: error {rows[-1]['error_pct']} %", flush=True)
    heatmaps(rows, os.path.join(args.out, "heatmaps.png"), config.dataset, config.num_labels)
    write_report(os.path.join(args.out, "table.md"), table(rows, defaults))


if __name__ == "__main__":
    run_tool(main)
