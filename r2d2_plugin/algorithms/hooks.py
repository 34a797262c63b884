"""R2-D2's USB hooks: R2's reprediction (``RepredictHook``) and the warm-up's unlabeled views
(``WarmupViewsHook``)."""
from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from semilearn.core.hooks import Hook

from ..core.schedule import STAGE_NAMES


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
        world, rank = (algorithm.world_size, algorithm.rank) if algorithm.in_process_group() else (1, 0)
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
        model, device = unwrapped(algorithm.model), self.device(algorithm)
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
        algorithm.repredicted(time.perf_counter() - start)


def unwrapped(model: nn.Module) -> nn.Module:
    """The net inside a DDP / DataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


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
