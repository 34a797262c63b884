"""The launcher's hooks, registered for every algorithm: a progress line and learning curves."""
from __future__ import annotations

import csv
import os
import time
from typing import Any

from semilearn.core.hooks import Hook

from ..algorithms.r2d2 import METRIC_KEYS


class ProgressHook(Hook):
    """One short line every ``num_log_iter`` iterations: iteration, loss, last eval top-1,
    it/s and ETA. Registered by the launcher for every algorithm."""

    def before_run(self, algorithm: Any) -> None:
        self.start_time, self.start_it = time.perf_counter(), algorithm.it
        self.top1 = float("nan")

    def after_train_step(self, algorithm: Any) -> None:
        log = algorithm.log_dict
        self.top1 = log.get("eval/top-1-acc", self.top1)
        done = algorithm.it + 1
        if not (self.every_n_iters(algorithm, algorithm.num_log_iter) or done == algorithm.num_train_iter):
            return
        rate = (done - self.start_it) / max(time.perf_counter() - self.start_time, 1e-9)
        eta = (algorithm.num_train_iter - done) / max(rate, 1e-9)
        loss = log.get("train/total_loss", log.get("train/sup_loss", float("nan")))
        print(f"[{algorithm.args.algorithm}] it {done}/{algorithm.num_train_iter}  loss {loss:.4f}  "
              f"top-1 {self.top1:.4f}  {rate:.1f} it/s  ETA {int(eta // 60)}m{int(eta % 60):02d}s",
              flush=True)


class CurveHook(Hook):
    """Appends ``curves.csv`` in the run's folder on every log and eval iteration: iteration,
    eval top-1 (eval iterations) and the R2-D2 metrics when the algorithm has them.
    Registered by the launcher for every algorithm."""

    KEYS = ["eval/top-1-acc", *METRIC_KEYS]

    def before_run(self, algorithm: Any) -> None:
        """A new file; on resume the old one, less the rows after the checkpoint's iteration
        (the crashed run wrote them; the resumed run writes them again)."""
        self.path = os.path.join(algorithm.save_dir, algorithm.save_name, "curves.csv")
        rows = [["iteration", *self.KEYS]]
        if algorithm.resume and os.path.isfile(self.path):
            with open(self.path, newline="") as f:
                old = list(csv.reader(f))
            rows += [row for row in old[1:] if row and int(row[0]) <= algorithm.it]
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerows(rows)

    def after_train_step(self, algorithm: Any) -> None:
        if not (self.every_n_iters(algorithm, algorithm.num_log_iter)
                or self.every_n_iters(algorithm, algorithm.num_eval_iter)):
            return
        log = algorithm.log_dict
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([algorithm.it + 1, *(log.get(k, "") for k in self.KEYS)])


def final_top1(algorithm: Any) -> float:
    """The eval top-1 at the end of training: the last evaluation's, or a fresh evaluation where
    this process trained no step (a run resumed at its end)."""
    final = getattr(algorithm, "log_dict", {}).get("eval/top-1-acc")
    return float(algorithm.evaluate("eval")["eval/top-1-acc"] if final is None else final)
