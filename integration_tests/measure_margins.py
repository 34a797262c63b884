"""Measure what the learning tests' margins rest on: a learning test's run and its supervised
control at one seed and torch thread count, exactly as the test builds them, printed as one JSON
line (method, control, and their differences). The margins in ``test_r2d2_training.py``,
``test_r2d2_strong.py`` and ``test_distributed.py`` are chosen from these lines.

    python integration_tests/measure_margins.py {main,strong,ddp} SEED THREADS >> margins.jsonl
    python integration_tests/measure_margins.py table margins.jsonl > table.md

``ddp`` runs the 2-process launch (one thread per process, as the test does) and no control: its
control is the ``main`` line's at the same seed and thread count (the same options).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from conftest import MAIN_JOB, MAIN_JOB_R2D2, build_alg, short_argv, supervised_control
from test_distributed import torchrun
from test_r2d2_strong import STRONG_BUDGET, STRONG_STAGES


def method_run(case: str, seed: str, tmp: Path) -> tuple:
    """(final top-1, pseudo-label accuracy) of the test's run of ``case`` at ``seed``."""
    if case == "ddp":
        ranks = torchrun(2, tmp / "two", short_argv(tmp / "runs", *MAIN_JOB, *MAIN_JOB_R2D2, "--seed", seed,
                                                    "--batch_size", "8", name="r2d2"), tmp)
        return ranks[0]["final_acc"], ranks[0]["pseudo_label_acc"]
    if case == "main":
        argv = short_argv(tmp, *MAIN_JOB, *MAIN_JOB_R2D2, "--seed", seed)
    else:
        argv = short_argv(tmp, "--algorithm", "r2d2_strong", *STRONG_BUDGET, *STRONG_STAGES, "--seed", seed)
    alg, _ = build_alg(argv)
    alg.train()
    return alg.log_dict["eval/top-1-acc"], alg.log_dict["r2d2/pseudo_label_acc"]


def main(case: str, seed: str, threads: int) -> None:
    torch.set_num_threads(threads)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.chdir(tmp)
        top1, pseudo = method_run(case, seed, tmp)
        line = {"case": case, "seed": int(seed), "threads": threads, "top1": top1, "pseudo_label_acc": pseudo}
        if case != "ddp":
            budget = STRONG_BUDGET if case == "strong" else MAIN_JOB
            control = supervised_control(tmp / "control", *budget, "--seed", seed)
            line.update(control_top1=control.final, control_unlabeled=control.unlabeled,
                        top1_diff=round(top1 - control.final, 4),
                        pseudo_label_diff=round(pseudo - control.unlabeled, 4))
    print(json.dumps({**line, "seconds": round(time.time() - start)}), flush=True)


def table(path: str) -> str:
    """The lines of ``path`` as a markdown table: per case and thread count, each seed's
    differences (top-1 / pseudo-labels; ddp against the main case's control), and the smallest."""
    lines = [json.loads(line) for line in open(path) if line.strip()]
    controls = {(r["seed"], r["threads"]): r for r in lines if r["case"] == "main"}
    out = ["| case | torch threads | seed | top-1 | control top-1 | top-1 diff | pseudo-labels | "
           "control (unlabeled) | pseudo-label diff |", "|---|---|---|---|---|---|---|---|---|"]
    smallest = {}
    for r in sorted(lines, key=lambda r: (r["case"], r["threads"], r["seed"])):
        control = r if r["case"] != "ddp" else controls.get((r["seed"], r["threads"]))
        if control is None:
            continue
        diffs = (r["top1"] - control["control_top1"], r["pseudo_label_acc"] - control["control_unlabeled"])
        key = (r["case"], r["threads"])
        smallest[key] = tuple(min(a, b) for a, b in zip(smallest.get(key, diffs), diffs))
        out.append(f"| {r['case']} | {r['threads']} | {r['seed']} | {r['top1']:.4f} | {control['control_top1']:.4f} "
                   f"| {diffs[0]:+.4f} | {r['pseudo_label_acc']:.4f} | {control['control_unlabeled']:.4f} "
                   f"| {diffs[1]:+.4f} |")
    out += ["", "| case | torch threads | smallest top-1 diff | smallest pseudo-label diff |", "|---|---|---|---|"]
    out += [f"| {case} | {threads} | {a:+.4f} | {b:+.4f} |" for (case, threads), (a, b) in sorted(smallest.items())]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1] == "table":
        print(table(sys.argv[2]), end="")
    else:
        main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
