"""R2-D2's USB hooks: R2's reprediction (``RepredictHook``) and the warm-up's unlabeled views
(``WarmupViewsHook``)."""
from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from semilearn.core.hooks import Hook
from semilearn.datasets.cv_datasets.datasetbase import BasicDataset

from ..core.schedule import STAGE_NAMES
from ..core.store import last_occurrence
from ..errors import ConfigError


class ArrayEvalView:
    """The eval view of an in-memory unlabeled set whose eval transform is ``ToTensor`` (+
    ``Normalize``), possibly after steps that leave these images as they are (a ``Resize`` to
    their own size): batches built from the uint8 array itself, converted and normalized per
    batch on the model's device with ToTensor's and Normalize's arithmetic (uint8 -> float / 255,
    then (x - mean) / std), so the values are those of the per-image PIL path. Nothing is copied
    or cached beyond one batch. A batch keeps the array's channels-last layout (CPU convolutions
    run about twice as fast in it; ``digits_cnn`` computes in it whatever its input's layout)."""

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
            yield idx.to(device), self.rows(idx.numpy(), device)

    def rows(self, idx: np.ndarray, device: torch.device) -> torch.Tensor:
        """The eval-view images of the dataset rows ``idx``, on ``device``."""
        x = torch.from_numpy(self.images[idx]).to(device)
        x = (x[..., None] if x.ndim == 3 else x).permute(0, 3, 1, 2)
        x = x.to(torch.get_default_dtype()).div(255)
        return x if self.normalize is None else self.normalize(x)


class RepredictHook(Hook):
    """R2, repetitive reprediction: before the iterations listed by the algorithm's schedule,
    set every store entry to the network's logits on the unlabeled set (eval mode, the eval
    transform, no gradient; with USB's EMA weights swapped in, as its evaluation does, when
    ``r2d2_repredict_from`` is ema). Also logs each stage boundary.

    A reprediction predicts with a frozen copy of that network (``freeze``). With
    ``r2d2_lazy_repredict`` it does not pass over the whole set: ``fill`` gives each row its
    logits when training first reads it (``R2D2.d2_step``): the values of the full pass,
    computed only for the rows read before the next reprediction. With ``r2d2_repredict_from``
    weak_view nothing is frozen: ``fill`` gives each row, when training first reads it, the
    network's logits on that step's weak view (train mode), as FixMatch makes its target.
    Lazy and weak_view R2 run in one process only."""

    def __init__(self) -> None:
        self.view: Optional[ArrayEvalView] = None
        self.frozen: Optional[nn.Module] = None
        self.frozen_state: Optional[Dict[str, torch.Tensor]] = None
        # Row-by-row R2: the rows not filled since the last reprediction (None: every row is up to date).
        self.unfilled: Optional[torch.Tensor] = None

    def before_run(self, algorithm: Any) -> None:
        if algorithm.in_process_group():
            check_one_process(algorithm.args, algorithm.world_size, self.unfilled is not None)
        algorithm.store.to(self.device(algorithm))
        if self.unfilled is not None:
            self.unfilled = self.unfilled.to(algorithm.store.device)
        self.repredict_at = set(algorithm.schedule.repredict_iters)
        self.stage_starts = {b: s + 1 for s, b in enumerate(algorithm.schedule.boundaries)}

    @staticmethod
    def device(algorithm: Any) -> torch.device:
        """The model's device."""
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

    @staticmethod
    def eval_dataset(algorithm: Any) -> Any:
        """The unlabeled set serving its images with the eval set's transform, image by image."""
        dset = copy.copy(algorithm.dataset_dict["train_ulb"])
        dset.transform = algorithm.dataset_dict["eval"].transform
        dset.is_ulb = False
        return dset

    def loader(self, algorithm: Any) -> DataLoader:
        """This process's share of ``eval_dataset`` in index order (the path for sets that
        ``ArrayEvalView`` does not serve). Its own generator: a pass draws nothing from the
        training's random streams, as the other paths do not."""
        return DataLoader(Subset(self.eval_dataset(algorithm), self.share(algorithm)),
                          batch_size=algorithm.args.eval_batch_size, shuffle=False,
                          num_workers=algorithm.args.num_workers, generator=torch.Generator().manual_seed(0))

    def array_view(self, algorithm: Any) -> Optional[ArrayEvalView]:
        """The ``ArrayEvalView`` of this process's share, found once and kept for the run; None
        where it does not apply."""
        if self.view is None:
            self.view = ArrayEvalView.of(algorithm.dataset_dict["train_ulb"],
                                         algorithm.dataset_dict["eval"].transform, self.share(algorithm))
        return self.view

    def batches(self, algorithm: Any) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(indices, eval-view images) batches of eval_batch_size of this process's share: from
        ``array_view``, else from ``loader``."""
        device, view = self.device(algorithm), self.array_view(algorithm)
        if view is not None:
            return view.batches(algorithm.args.eval_batch_size, device)
        return ((b["idx_lb"].to(device), b["x_lb"].to(device)) for b in self.loader(algorithm))

    def eval_images(self, algorithm: Any, idx: torch.Tensor) -> torch.Tensor:
        """The eval-view images of the unlabeled rows ``idx``, on the model's device."""
        device, view = self.device(algorithm), self.array_view(algorithm)
        if view is not None:
            return view.rows(idx.cpu().numpy(), device)
        dset = self.eval_dataset(algorithm)
        return torch.stack([dset[i]["x_lb"] for i in idx.tolist()]).to(device)

    @contextlib.contextmanager
    def predicting(self, algorithm: Any) -> Iterator[nn.Module]:
        """The net R2 predicts with, in eval mode (USB's EMA weights swapped in when
        ``r2d2_repredict_from`` is ema); restored on exit."""
        model = unwrapped(algorithm.model)
        was_training = model.training
        model.eval()
        from_ema = algorithm.args.r2d2_repredict_from == "ema"
        if from_ema:
            algorithm.ema.apply_shadow()
        try:
            yield model
        finally:
            if from_ema:
                algorithm.ema.restore()
            model.train(was_training)

    @torch.no_grad()
    def repredict(self, algorithm: Any) -> None:
        """R2: the store takes the network's logits, at once or, with ``r2d2_lazy_repredict``,
        row by row through ``fill``; either way from ``freeze``'s copy of the predicting net.
        With ``r2d2_repredict_from`` weak_view, row by row from the training steps' weak views."""
        start = time.perf_counter()
        self.frozen = self.frozen_state = None
        if algorithm.args.r2d2_repredict_from != "weak_view":
            with self.predicting(algorithm) as model:
                self.freeze(copy.deepcopy(model))
        if row_by_row(algorithm.args):
            self.unfilled = torch.ones(len(algorithm.dataset_dict["train_ulb"]), dtype=torch.bool,
                                       device=algorithm.store.device)
        else:
            self.full_pass(algorithm)
        if algorithm.store.device.type == "cuda":
            torch.cuda.synchronize(algorithm.store.device)  # the pass's queued kernels, in its time
        algorithm.repredicted(time.perf_counter() - start)

    def freeze(self, net: nn.Module) -> None:
        """Keep ``net``, a copy of the predicting net, to predict with: in eval mode, without
        gradients, its BatchNorm folded into the convolutions (``fold_batchnorm``); its weights
        before folding are what a checkpoint saves."""
        net.eval().requires_grad_(False)
        self.frozen_state = net.state_dict()
        self.frozen = fold_batchnorm(net)

    def full_pass(self, algorithm: Any) -> None:
        """Overwrite the store with the frozen net's logits. Under DDP each process predicts its
        share, batch by batch, the same number of batches on every process (a finished share
        sends an empty one); the store exchanges what it needs (``assign_share``)."""
        device, batch_size, batches = self.device(algorithm), algorithm.args.eval_batch_size, self.batches(algorithm)
        share = self.share(algorithm)
        longest = len(range(0, len(algorithm.dataset_dict["train_ulb"]), share.step))
        for _ in range(math.ceil(longest / batch_size)):
            batch = next(batches, None)
            if batch is None:
                idx = torch.empty(0, dtype=torch.long, device=device)
                logits = torch.empty(0, algorithm.num_classes, device=device)
            else:
                idx, logits = batch[0], self.frozen(batch[1])["logits"].float()
            algorithm.store.assign_share(idx, logits, batch_size)
        self.frozen = self.frozen_state = self.unfilled = None

    @torch.no_grad()
    def fill(self, algorithm: Any, idx: torch.Tensor, logits_w: torch.Tensor) -> None:
        """Row-by-row R2: the rows of ``idx`` not read since the last reprediction take the frozen
        network's logits (timed with the repredictions), or with weak_view this step's weak-view
        logits ``logits_w`` (a row twice in the batch: its last). Nothing to do after a full pass."""
        if self.unfilled is None:
            return
        start = time.perf_counter()
        rows, logits = last_occurrence(idx.to(self.unfilled.device), logits_w.to(self.unfilled.device))
        new = self.unfilled[rows]
        rows, logits = rows[new], logits[new]
        if len(rows):
            if algorithm.args.r2d2_repredict_from != "weak_view":
                images = self.eval_images(algorithm, rows)
                # in fp32 as the full pass, outside the training step's autocast (amp: True)
                with torch.autocast(images.device.type, enabled=False):
                    logits = self.frozen(images)["logits"]
            algorithm.store.assign(rows, logits.float())
            self.unfilled[rows] = False
        algorithm.repredict_seconds += time.perf_counter() - start

    def filled(self) -> Optional[torch.Tensor]:
        """Row-by-row R2: the mask of the rows that hold the last reprediction's values (None: all)."""
        return None if self.unfilled is None else ~self.unfilled

    def state_dict(self) -> Optional[Dict[str, Any]]:
        """What a checkpoint needs to go on filling rows: the frozen net (None with weak_view)
        and the unfilled rows."""
        if self.unfilled is None:
            return None
        return {"net": self.frozen_state, "unfilled": self.unfilled.cpu()}

    def load_state_dict(self, algorithm: Any, state: Optional[Dict[str, Any]]) -> None:
        """Restore what ``state_dict`` saved: the frozen net and the rows still to fill."""
        self.frozen = self.frozen_state = self.unfilled = None
        if state is None:
            return
        if state["net"] is not None:
            net = copy.deepcopy(unwrapped(algorithm.model))
            net.load_state_dict(state["net"])
            self.freeze(net)
        self.unfilled = state["unfilled"].to(algorithm.store.device)


def row_by_row(args: Any) -> bool:
    """Whether R2 fills each row when training first reads it (lazy or weak_view R2)."""
    return bool(args.r2d2_lazy_repredict) or args.r2d2_repredict_from == "weak_view"


def check_one_process(args: Any, world_size: int, resumed_row_by_row: bool = False) -> None:
    """Refuse lazy or weak_view R2 (or a resume from a checkpoint such a run wrote) in a run of
    ``world_size`` processes: their unfilled rows and frozen net are per process."""
    if world_size > 1 and (row_by_row(args) or resumed_row_by_row):
        raise ConfigError("r2d2_lazy_repredict and r2d2_repredict_from: weak_view work in one "
                          f"process, this run has {world_size}",
                          "set r2d2_lazy_repredict: False and r2d2_repredict_from: network or "
                          "ema under torchrun (and resume from a checkpoint written by a run "
                          "without them)")


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """Fold, in place, each BatchNorm2d with running statistics that directly follows a Conv2d
    in an ``nn.Sequential`` into that convolution (torch's ``fuse_conv_bn_eval``; the BatchNorm
    becomes an identity): for a net in eval mode the same function up to float rounding, one
    pass over the activations fewer (``digits_cnn``'s forward pass takes 0.73-0.89 x the time
    on one CPU thread). Other layouts, such as WRN's BatchNorm before its convolutions, stay
    as they are."""
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.running_mean is not None:
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return net


def unwrapped(model: nn.Module) -> nn.Module:
    """The net inside a DDP / DataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


class WarmupViewsHook(Hook):
    """The warm-up stage trains on labeled data only: through USB epochs that lie wholly inside
    it, the unlabeled set serves indices only (``algorithm.ULB_VIEWS_WARMUP``, USB's
    ``supervised`` name) and its transform is ``no_view``, so no unlabeled image is augmented
    for nothing (USB's BasicDataset applies the weak transform before it looks at the name);
    from the epoch that reaches the D2 stage on, it serves ``algorithm.ULB_VIEWS`` with its own
    transform, which it is given back after the run. Switched per epoch, when USB makes the
    loader's iterator, so loader workers see it too."""

    def before_run(self, algorithm: Any) -> None:
        self.transform = algorithm.dataset_dict["train_ulb"].transform

    def before_train_epoch(self, algorithm: Any) -> None:
        last_it = (algorithm.epoch + 1) * algorithm.num_iter_per_epoch - 1
        self.serve(algorithm, warmup_only=algorithm.schedule.stage(last_it) == 1)

    def after_run(self, algorithm: Any) -> None:
        self.serve(algorithm, warmup_only=False)

    def serve(self, algorithm: Any, warmup_only: bool) -> None:
        ulb = algorithm.dataset_dict["train_ulb"]
        ulb.alg = algorithm.ULB_VIEWS_WARMUP if warmup_only else algorithm.ULB_VIEWS
        ulb.transform = no_view if warmup_only else self.transform


def no_view(image: Any) -> None:
    """The unlabeled set's transform through warm-up-only epochs: no view is made."""
    return None
