"""R2-D2's USB hooks: R2's reprediction (``RepredictHook``) and the warm-up's unlabeled views
(``WarmupViewsHook``)."""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Iterator, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from semilearn.core.hooks import Hook
from semilearn.datasets.cv_datasets.datasetbase import BasicDataset

from ..core.schedule import STAGE_NAMES


class ArrayEvalView:
    """The eval view of an in-memory unlabeled set whose eval transform is ``ToTensor`` (+
    ``Normalize``), possibly after steps that leave these images as they are (a ``Resize`` to
    their own size): batches built from the uint8 array itself, converted and normalized per
    batch on the model's device with ToTensor's and Normalize's arithmetic (uint8 -> float / 255,
    then (x - mean) / std), so the values are those of the per-image PIL path. Nothing is copied
    or cached beyond one batch. A batch keeps the array's channels-last layout, in which CPU
    convolutions run about twice as fast as in the per-image path's contiguous one."""

    def __init__(self, images: np.ndarray, idx: np.ndarray, normalize: Optional[transforms.Normalize]):
        self.images, self.idx, self.normalize = images, idx, normalize

    @classmethod
    def of(cls, dset: Any, transform: Any, share: range) -> Optional["ArrayEvalView"]:
        """The view of ``dset``'s rows ``share`` under ``transform``, or None where it does not
        apply (images not a uint8 (N,H,W) / (N,H,W,3) array served by BasicDataset's own
        ``__sample__``, or a transform other than the above)."""
        data = getattr(dset, "data", None)
        if (type(dset).__sample__ is not BasicDataset.__sample__ or not isinstance(data, np.ndarray)
                or data.dtype != np.uint8 or len(data) == 0
                or not (data.ndim == 3 or (data.ndim == 4 and data.shape[-1] == 3))):
            return None
        steps = list(transform.transforms) if isinstance(transform, transforms.Compose) else [transform]
        kinds = [type(step) for step in steps]
        if transforms.ToTensor not in kinds:
            return None
        cut = kinds.index(transforms.ToTensor)
        before, after = steps[:cut], steps[cut + 1:]
        sample = Image.fromarray(data[0])
        # torchvision's resize returns its input itself when the size is already right.
        if any(type(step) is not transforms.Resize or step(sample) is not sample for step in before):
            return None
        if not all(type(step) is transforms.Normalize for step in after) or len(after) > 1:
            return None
        return cls(data, np.asarray(share, dtype=np.int64), after[0] if after else None)

    def batches(self, batch_size: int, device: torch.device) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(indices, eval-view images) of consecutive rows, on ``device``."""
        for start in range(0, len(self.idx), batch_size):
            idx = torch.from_numpy(self.idx[start:start + batch_size])
            x = torch.from_numpy(self.images[idx.numpy()]).to(device)
            x = (x[..., None] if x.ndim == 3 else x).permute(0, 3, 1, 2)
            x = x.to(torch.get_default_dtype()).div(255)
            yield idx.to(device), (x if self.normalize is None else self.normalize(x))


class RepredictHook(Hook):
    """R2, repetitive reprediction: before the iterations listed by the algorithm's schedule,
    overwrite every store entry with the network's logits on the unlabeled set (eval mode,
    the eval transform, no gradient; with USB's EMA weights swapped in, as its evaluation does,
    when ``r2d2_repredict_from`` is ema). Also logs each stage boundary."""

    def __init__(self) -> None:
        self.view: Optional[ArrayEvalView] = None

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
        """This process's share of the unlabeled set with the eval set's transform, in index order,
        image by image (the path for sets that ``ArrayEvalView`` does not serve)."""
        dset = copy.copy(algorithm.dataset_dict["train_ulb"])
        dset.transform = algorithm.dataset_dict["eval"].transform
        dset.is_ulb = False
        return DataLoader(Subset(dset, self.share(algorithm)), batch_size=algorithm.args.eval_batch_size,
                          shuffle=False, num_workers=algorithm.args.num_workers)

    def batches(self, algorithm: Any) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(indices, eval-view images) batches of eval_batch_size of this process's share: from an
        ``ArrayEvalView`` (found at the first reprediction, kept for the run), else from ``loader``."""
        if self.view is None:
            self.view = ArrayEvalView.of(algorithm.dataset_dict["train_ulb"],
                                         algorithm.dataset_dict["eval"].transform, self.share(algorithm))
        device = self.device(algorithm)
        if self.view is not None:
            return self.view.batches(algorithm.args.eval_batch_size, device)
        return ((b["idx_lb"].to(device), b["x_lb"].to(device)) for b in self.loader(algorithm))

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
            batch_size, batches = algorithm.args.eval_batch_size, self.batches(algorithm)
            share = self.share(algorithm)
            longest = len(range(0, len(algorithm.dataset_dict["train_ulb"]), share.step))
            for _ in range(math.ceil(longest / batch_size)):
                batch = next(batches, None)
                if batch is None:
                    idx = torch.empty(0, dtype=torch.long, device=device)
                    logits = torch.empty(0, algorithm.num_classes, device=device)
                else:
                    idx, logits = batch[0], model(batch[1])["logits"].float()
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
