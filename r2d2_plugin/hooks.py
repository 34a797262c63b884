"""USB hooks: R2's reprediction (``RepredictHook``), the warm-up's unlabeled views
(``WarmupViewsHook``), and the launcher's progress line and learning curves."""
from __future__ import annotations

import copy
import csv
import math
import os
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from semilearn.core.hooks import Hook

from . import distributed
from .schedule import STAGE_NAMES


class RepredictHook(Hook):
    """R2, repetitive reprediction: before the iterations listed by the algorithm's schedule,
    overwrite every store entry with the network's logits on the unlabeled set (eval mode,
    the eval transform, no gradient; with USB's EMA weights swapped in, as its evaluation does,
    when ``r2d2_repredict_from`` is ema). Also logs each stage boundary."""

    def before_run(self, algorithm: Any) -> None:
        algorithm.store.to(self.device(algorithm))
        self.repredict_at = set(algorithm.schedule.repredict_iters)
        self.stage_starts = {b: s + 1 for s, b in enumerate(algorithm.schedule.boundaries)}

    @staticmethod
    def device(algorithm: Any) -> torch.device:
        return next(algorithm.model.parameters()).device

    def before_train_step(self, algorithm: Any) -> None:
        stage = algorithm.schedule.stage(algorithm.it)
        if self.stage_starts.get(algorithm.it) == stage:
            algorithm.print_fn(f"r2d2: stage {stage} ({STAGE_NAMES[stage]}) begins at iteration "
                               f"{algorithm.it}")
        if algorithm.it in self.repredict_at:
            self.repredict(algorithm)

    @staticmethod
    def share(algorithm: Any) -> range:
        """The unlabeled indices this process repredicts: every N-th from its rank on under DDP
        with N processes, all of them in one process."""
        world, rank = (algorithm.world_size, algorithm.rank) if distributed.active(algorithm) else (1, 0)
        return range(rank, len(algorithm.dataset_dict["train_ulb"]), world)

    def loader(self, algorithm: Any) -> DataLoader:
        """This process's share of the unlabeled set with the eval set's transform, in index order."""
        dset = copy.copy(algorithm.dataset_dict["train_ulb"])
        dset.transform = algorithm.dataset_dict["eval"].transform
        dset.is_ulb = False
        return DataLoader(Subset(dset, self.share(algorithm)), batch_size=algorithm.args.eval_batch_size,
                          shuffle=False, num_workers=algorithm.args.num_workers)

    @torch.no_grad()
    def repredict(self, algorithm: Any) -> None:
        """Overwrite the store with the network's logits. Under DDP each process predicts its
        share, batch by batch, the same number of batches on every process (a finished share
        sends an empty one); the store exchanges what it needs (``assign_share``)."""
        start = time.perf_counter()
        model, device = distributed.unwrapped(algorithm.model), self.device(algorithm)
        was_training = model.training
        model.eval()
        from_ema = algorithm.args.r2d2_repredict_from == "ema"
        if from_ema:
            algorithm.ema.apply_shadow()
        try:
            batch_size, batches = algorithm.args.eval_batch_size, iter(self.loader(algorithm))
            share = self.share(algorithm)
            longest = len(range(0, len(algorithm.dataset_dict["train_ulb"]), share.step))
            for _ in range(math.ceil(longest / batch_size)):
                batch = next(batches, None)
                if batch is None:
                    idx = torch.empty(0, dtype=torch.long, device=device)
                    logits = torch.empty(0, algorithm.num_classes, device=device)
                else:
                    idx, logits = batch["idx_lb"].to(device), model(batch["x_lb"].to(device))["logits"].float()
                algorithm.store.assign_share(idx, logits, batch_size)
        finally:
            if from_ema:
                algorithm.ema.restore()
            model.train(was_training)
        algorithm.repredictions += 1
        algorithm.repredict_seconds += time.perf_counter() - start
        algorithm.print_fn(f"r2d2: reprediction {algorithm.repredictions} at iteration "
                           f"{algorithm.it}: pseudo-label acc {algorithm.store.accuracy():.4f}, "
                           f"entropy {algorithm.store.mean_entropy():.4f}")

    def after_train_step(self, algorithm: Any) -> None:
        """``store.before_save`` on every process just before USB's rank-0 checkpoint
        (CheckpointHook saves at evaluation iterations and at the last one)."""
        if self.every_n_iters(algorithm, algorithm.num_eval_iter) or self.is_last_iter(algorithm):
            algorithm.store.before_save()

    def after_run(self, algorithm: Any) -> None:
        """``store.before_save`` before USB's final save."""
        algorithm.store.before_save()


class WarmupViewsHook(Hook):
    """The warm-up stage trains on labeled data only: through USB epochs that lie wholly inside
    it, the unlabeled set serves indices only (``algorithm.ULB_VIEWS_WARMUP``, USB's
    ``supervised`` name), so no unlabeled image is augmented for nothing; from the epoch that
    reaches the D2 stage on, it serves ``algorithm.ULB_VIEWS``. Switched per epoch, when USB makes
    the loader's iterator, so loader workers see it too."""

    def before_train_epoch(self, algorithm: Any) -> None:
        last_it = (algorithm.epoch + 1) * algorithm.num_iter_per_epoch - 1
        warmup_only = algorithm.schedule.stage(last_it) == 1
        algorithm.dataset_dict["train_ulb"].alg = (algorithm.ULB_VIEWS_WARMUP if warmup_only
                                                   else algorithm.ULB_VIEWS)


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

    KEYS = ["eval/top-1-acc", "r2d2/stage", "r2d2/repredictions", "r2d2/pseudo_label_entropy",
            "r2d2/pseudo_label_acc"]

    def before_run(self, algorithm: Any) -> None:
        self.path = os.path.join(algorithm.save_dir, algorithm.save_name, "curves.csv")
        if not (algorithm.resume and os.path.isfile(self.path)):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(["iteration", *self.KEYS])

    def after_train_step(self, algorithm: Any) -> None:
        if not (self.every_n_iters(algorithm, algorithm.num_log_iter)
                or self.every_n_iters(algorithm, algorithm.num_eval_iter)):
            return
        log = algorithm.log_dict
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([algorithm.it + 1, *(log.get(k, "") for k in self.KEYS)])
