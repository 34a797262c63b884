"""D2's pseudo-label store: one learnable logit vector per unlabeled training sample.

Storage options (``r2d2_store_dtype``, ``r2d2_store_device``): the logits can be kept in fp32,
bf16 or fp16, and on the model's device or in CPU memory (pinned when CUDA exists, so the rows of
a batch move to the GPU per step). Every read, D2 step and reprediction computes in fp32 on the
model's device; only the kept copy is in the chosen dtype and place.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import torch

from . import collectives
from ..errors import ConfigError

STORE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
STORE_DEVICES = ("device", "cpu_pinned", "sharded")
# Rows per chunk for store-wide statistics: bounds their fp32 temporaries (an ImageNet-size
# store is 1.28 M x 1000).
STATS_CHUNK = 65536


def check_store_options(dtype: str, device: str) -> None:
    """Reject a store dtype or device that is not one of the options."""
    if dtype not in STORE_DTYPES:
        raise ConfigError(f"r2d2_store_dtype={dtype!r} is not a store dtype",
                          f"set r2d2_store_dtype to one of {', '.join(STORE_DTYPES)}")
    if device not in STORE_DEVICES:
        raise ConfigError(f"r2d2_store_device={device!r} is not a store place",
                          f"set r2d2_store_device to one of {', '.join(STORE_DEVICES)} (device: with "
                          f"the model; cpu_pinned: pinned CPU memory, rows moved per batch; sharded: "
                          f"on the model's device, split across torchrun's processes)")


class PseudoLabelStore:
    """Pseudo-label logits ỹ_i ∈ R^C for every unlabeled sample, indexed by USB's ``idx_ulb``.

    The pseudo-label is softmax(ỹ_i). Entries start at zero (uniform) and are set by R2's
    repredictions and moved by D2's gradient steps; the true labels that USB keeps for the
    unlabeled set are held beside them only to report pseudo-label accuracy.

    ``dtype`` (``fp32`` | ``bf16`` | ``fp16``) is the kept precision; ``place`` is ``device``
    (the logits follow ``to(device)``, the model's device) or ``cpu_pinned`` (they stay in CPU
    memory, page-locked when CUDA exists; on a machine without CUDA that is plain CPU memory).
    ``device`` is where the computations run.
    """

    def __init__(self, num_samples: int, num_classes: int, true_labels: torch.Tensor,
                 dtype: str = "fp32", place: str = "device"):
        check_store_options(dtype, place)
        self.dtype_name, self.place, self.num_samples = dtype, place, num_samples
        self.compute_device = torch.device("cpu")
        self.logits = self.placed(torch.zeros(num_samples, num_classes, dtype=STORE_DTYPES[dtype]))
        self.true_labels = torch.as_tensor(true_labels, dtype=torch.long).clone()

    @property
    def device(self) -> torch.device:
        """Where reads, D2 steps and statistics are computed (the model's device)."""
        return self.compute_device

    def placed(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` in the store's dtype and place."""
        logits = logits.to(STORE_DTYPES[self.dtype_name])
        if self.place != "cpu_pinned":
            return logits.to(self.compute_device)
        logits = logits.cpu()
        return logits.pin_memory() if torch.cuda.is_available() and not logits.is_pinned() else logits

    def to(self, device: torch.device) -> "PseudoLabelStore":
        """Compute on ``device``; the logits move there too unless the place is ``cpu_pinned``."""
        self.compute_device = torch.device(device)
        self.logits = self.placed(self.logits)
        self.true_labels = self.true_labels.to(self.compute_device)
        return self

    def rows(self, positions: torch.Tensor) -> torch.Tensor:
        """A copy of the kept rows at ``positions`` in fp32 on ``device``."""
        rows = self.logits.index_select(0, positions.to(self.logits.device))
        return rows.to(self.compute_device, torch.float32, non_blocking=True)

    def set_rows(self, positions: torch.Tensor, rows: torch.Tensor) -> None:
        """Keep ``rows`` at ``positions``, in the store's dtype and place."""
        self.logits[positions.to(self.logits.device)] = rows.detach().to(self.logits.device, self.logits.dtype)

    def kept(self, idx: torch.Tensor, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The positions of the samples ``idx`` that this store keeps, and their ``rows``: all of
        them here (``ShardedPseudoLabelStore`` keeps its own share)."""
        return idx, rows

    def reduced(self, *totals: float) -> Tuple[float, ...]:
        """Store-wide ``totals`` summed over the processes that share the store: one here."""
        return totals

    def read(self, idx: torch.Tensor) -> torch.Tensor:
        """A copy of the logits of ``idx`` in fp32 on ``device`` (later updates do not change it)."""
        return self.rows(idx)

    def write(self, idx: torch.Tensor, rows: torch.Tensor) -> None:
        """Keep ``rows`` (any dtype and device) as the logits of ``idx``."""
        self.set_rows(*self.kept(idx.to(self.compute_device), rows.to(self.compute_device)))

    def assign(self, idx: torch.Tensor, logits: torch.Tensor) -> None:
        """R2: overwrite the entries of ``idx`` with network logits."""
        self.write(idx, logits)

    def assign_share(self, idx: torch.Tensor, logits: torch.Tensor, pad_to: int) -> None:
        """R2: this process's predictions for ``idx``, its share of the unlabeled set, at most
        ``pad_to`` rows per call and as many calls on every process. Every process keeps every
        row, so under DDP the shares are gathered and all of them assigned."""
        if collectives.in_group():
            idx, logits = collectives.gather_padded(idx, logits, pad_to)
        self.assign(idx, logits)

    def before_save(self) -> None:
        """Collective, just before USB's rank-0 checkpoint: under DDP, check that every process
        keeps the same store."""
        collectives.check_stores_agree(self)

    def descend(self, idx: torch.Tensor, probs: torch.Tensor, step: float) -> None:
        """D2's gradient step for the batch entries ``idx``.

        With L the batch mean of α·KL(f ‖ softmax(ỹ)) + β·H(f) over B samples,
        ∂L/∂ỹ_i = (α/B)(softmax(ỹ_i) − f_i), so ỹ_i ← ỹ_i − λ·∂L/∂ỹ_i is
        ỹ_i ← ỹ_i − step·(softmax(ỹ_i) − f_i) with ``step`` = λα/B. Its fixed point
        softmax(ỹ_i) = f_i is the paper's exponential link between pseudo-labels and network
        predictions (ỹ equals the network's logits up to a constant). An index that appears twice
        in a batch (USB's sampler chains shuffles) takes the step of its last occurrence, as the
        reference's store does, on CPU and CUDA alike. Computed in fp32; the result is rounded
        to the store's dtype.
        """
        idx, probs = last_occurrence(idx.to(self.compute_device), probs.to(self.compute_device))
        positions, probs = self.kept(idx, probs)
        current = self.rows(positions)
        grad = torch.softmax(current, dim=-1) - probs.detach().to(current)
        self.set_rows(positions, current - step * grad)

    def hard_labels(self, idx: torch.Tensor) -> torch.Tensor:
        """argmax ỹ_i for the fine-tune stage."""
        return self.read(idx).argmax(dim=-1)

    def chunks(self, mask: Optional[torch.Tensor] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(fp32 logits, true labels) of consecutive row blocks, on ``device``; only the rows
        where ``mask`` (one bool per kept row) is true, when given."""
        for start in range(0, self.logits.shape[0], STATS_CHUNK):
            rows = self.logits[start:start + STATS_CHUNK].to(self.compute_device, torch.float32)
            labels = self.true_labels[start:start + STATS_CHUNK].to(self.compute_device)
            if mask is not None:
                keep = mask[start:start + STATS_CHUNK].to(self.compute_device)
                rows, labels = rows[keep], labels[keep]
            yield rows, labels

    def mean_entropy(self, mask: Optional[torch.Tensor] = None) -> float:
        """Mean entropy H(softmax(ỹ)) over the store (or its rows where ``mask`` is true), in
        nats; NaN over no rows."""
        total = count = 0.0
        for rows, _ in self.chunks(mask):
            log_p = torch.log_softmax(rows, dim=-1)
            total += float(-(log_p.exp() * log_p).sum(dim=-1).sum())
            count += len(rows)
        total, count = self.reduced(total, count)
        return total / count if count else float("nan")

    def accuracy(self, mask: Optional[torch.Tensor] = None) -> float:
        """Share of entries (of the rows where ``mask`` is true) whose argmax ỹ is the true
        label; NaN (absent) over no rows and unless every true label is known. With a -1
        (unknown, as with ``npz`` data) the known ones are at most the labeled samples that USB
        also puts in the unlabeled set, which say nothing about the pseudo-labels."""
        hits = counted = 0
        for rows, labels in self.chunks(mask):
            hits += int((rows.argmax(dim=-1) == labels).sum())
            counted += len(rows)
        unknown = int((self.true_labels < 0).sum())
        hits, counted, unknown = self.reduced(hits, counted, unknown)
        return hits / counted if counted and not unknown else float("nan")

    def nbytes(self) -> int:
        """Bytes of the kept logits."""
        return self.logits.numel() * self.logits.element_size()

    def full_logits(self) -> torch.Tensor:
        """The whole store (all samples x C, kept dtype) on the CPU."""
        return self.logits.detach().cpu().clone()

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The store for a checkpoint: its logits on the CPU."""
        return {"logits": self.full_logits()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """The store from a checkpoint; refuses one of another shape (another dataset or split)."""
        logits = state["logits"]
        check_shape(logits, tuple(self.logits.shape))
        self.logits = self.placed(logits)


def check_shape(logits: torch.Tensor, needed: Tuple[int, int]) -> None:
    """Refuse a checkpoint's store whose shape is not this run's (another dataset or split)."""
    if tuple(logits.shape) != needed:
        raise ConfigError(f"the checkpoint's pseudo-label store has shape {tuple(logits.shape)}, "
                          f"this run needs {needed}",
                          "resume with the dataset, num_labels, seed and num_classes of the run "
                          "that wrote the checkpoint")


def last_occurrence(idx: torch.Tensor, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``idx`` without repeats, each with the row of its last occurrence."""
    unique, inverse = torch.unique(idx, return_inverse=True)
    if len(unique) == len(idx):
        return idx, rows
    position = torch.arange(len(idx), device=idx.device)
    last = torch.full((len(unique),), -1, dtype=torch.long, device=idx.device)
    last = last.scatter_reduce(0, inverse, position, reduce="amax")
    return idx[last], rows[last]
