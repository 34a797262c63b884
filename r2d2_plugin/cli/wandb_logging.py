"""W&B logging ready for leaderboards, built on USB's own ``WANDBHook``."""
from __future__ import annotations

import os
from typing import Any, Dict, List

from semilearn.core.hooks import WANDBHook

from ..algorithms.r2d2 import METRIC_KEYS
from .hooks import final_top1

# Keys that USB's WANDBHook drops (it logs a fixed list) and that a comparison needs.
EXTRA_KEYS = [*METRIC_KEYS, "eval/loss", "eval/balanced_acc"]


def run_name(args: Any) -> str:
    return f"{args.algorithm}_{args.dataset}_{args.num_labels}_seed{args.seed}"


def run_group(args: Any) -> str:
    """Runs of every algorithm and seed in the same setting share a group."""
    return f"{args.dataset}_{args.num_labels}"


def run_tags(args: Any) -> List[str]:
    return [f"dataset:{args.dataset}", f"num_labels:{args.num_labels}",
            f"algorithm:{args.algorithm}", f"seed:{args.seed}", f"net:{args.net}"]


class LeaderboardWandbHook(WANDBHook):
    """USB's ``WANDBHook`` plus: the R2-D2 metrics (``EXTRA_KEYS``), a standard run name
    (``<algorithm>_<dataset>_<num_labels>_seed<seed>``), group (``<dataset>_<num_labels>``) and
    tags (dataset, num_labels, algorithm, seed, net) next to USB's, and the summary metrics
    ``best top-1``, ``final top-1`` and ``error %``. USB's hook still logs the whole config.
    Offline runs (``WANDB_MODE=offline``) need no network."""

    def __init__(self) -> None:
        super().__init__()
        self.log_key_list = [*self.log_key_list, *EXTRA_KEYS]

    def before_run(self, algorithm: Any) -> None:
        args = algorithm.args
        previous = os.environ.get("WANDB_RUN_GROUP")
        os.environ["WANDB_RUN_GROUP"] = run_group(args)
        try:
            super().before_run(algorithm)
        finally:
            if previous is None:
                del os.environ["WANDB_RUN_GROUP"]
            else:
                os.environ["WANDB_RUN_GROUP"] = previous
        self.run.name = run_name(args)
        self.run.tags = (*self.run.tags, *run_tags(args))

    def after_run(self, algorithm: Any) -> None:
        self.run.summary.update(summary(algorithm))
        super().after_run(algorithm)


def summary(algorithm: Any) -> Dict[str, float]:
    final = final_top1(algorithm)
    return {"best top-1": float(algorithm.best_eval_acc), "final top-1": final,
            "error %": 100.0 * (1.0 - final)}
