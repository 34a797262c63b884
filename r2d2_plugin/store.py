"""D2's pseudo-label store: one learnable logit vector per unlabeled training sample."""
from __future__ import annotations

from typing import Dict

import torch

from .errors import ConfigError


class PseudoLabelStore:
    """Pseudo-label logits ỹ_i ∈ R^C for every unlabeled sample, indexed by USB's ``idx_ulb``.

    The pseudo-label is softmax(ỹ_i). Entries start at zero (uniform) and are set by R2's
    repredictions and moved by D2's gradient steps; the true labels that USB keeps for the
    unlabeled set are held beside them only to report pseudo-label accuracy.
    """

    def __init__(self, num_samples: int, num_classes: int, true_labels: torch.Tensor):
        self.logits = torch.zeros(num_samples, num_classes)
        self.true_labels = torch.as_tensor(true_labels, dtype=torch.long).clone()

    @property
    def device(self) -> torch.device:
        return self.logits.device

    def to(self, device: torch.device) -> "PseudoLabelStore":
        self.logits = self.logits.to(device)
        self.true_labels = self.true_labels.to(device)
        return self

    def read(self, idx: torch.Tensor) -> torch.Tensor:
        """A copy of the logits of ``idx`` (later updates do not change it)."""
        return self.logits.index_select(0, idx.to(self.device))

    def assign(self, idx: torch.Tensor, logits: torch.Tensor) -> None:
        """R2: overwrite the entries of ``idx`` with network logits."""
        self.logits[idx.to(self.device)] = logits.detach().to(self.logits)

    def descend(self, idx: torch.Tensor, probs: torch.Tensor, step: float) -> None:
        """D2's gradient step for the batch entries ``idx``.

        With L the batch mean of α·KL(f ‖ softmax(ỹ)) + β·H(f) over B samples,
        ∂L/∂ỹ_i = (α/B)(softmax(ỹ_i) − f_i), so ỹ_i ← ỹ_i − λ·∂L/∂ỹ_i is
        ỹ_i ← ỹ_i − step·(softmax(ỹ_i) − f_i) with ``step`` = λα/B. Its fixed point
        softmax(ỹ_i) = f_i is the paper's exponential link between pseudo-labels and network
        predictions (ỹ equals the network's logits up to a constant). An index that appears twice
        in a batch (USB's sampler chains shuffles) takes the step of its last occurrence, as the
        reference's store does, on CPU and CUDA alike.
        """
        idx, probs = last_occurrence(idx.to(self.device), probs)
        current = self.logits.index_select(0, idx)
        grad = torch.softmax(current, dim=-1) - probs.detach().to(current)
        self.logits[idx] = current - step * grad

    def hard_labels(self, idx: torch.Tensor) -> torch.Tensor:
        """argmax ỹ_i for the fine-tune stage."""
        return self.read(idx).argmax(dim=-1)

    def mean_entropy(self) -> float:
        """Mean entropy H(softmax(ỹ)) over the store, in nats."""
        log_p = torch.log_softmax(self.logits, dim=-1)
        return float(-(log_p.exp() * log_p).sum(dim=-1).mean())

    def accuracy(self) -> float:
        """Share of entries whose argmax ỹ is the true label (entries whose true label is
        unknown, -1, are left out; NaN when none is known)."""
        known = self.true_labels >= 0
        hits = self.logits[known].argmax(dim=-1) == self.true_labels[known]
        return float(hits.float().mean()) if bool(known.any()) else float("nan")

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {"logits": self.logits.detach().cpu().clone()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        logits = state["logits"]
        if logits.shape != self.logits.shape:
            raise ConfigError(f"the checkpoint's pseudo-label store has shape {tuple(logits.shape)}, "
                              f"this run needs {tuple(self.logits.shape)}",
                              "resume with the dataset, num_labels, seed and num_classes of the run "
                              "that wrote the checkpoint")
        self.logits = logits.to(self.logits)


def last_occurrence(idx: torch.Tensor, rows: torch.Tensor):
    """``idx`` without repeats, each with the row of its last occurrence."""
    unique, inverse = torch.unique(idx, return_inverse=True)
    if len(unique) == len(idx):
        return idx, rows
    position = torch.arange(len(idx), device=idx.device)
    last = torch.full((len(unique),), -1, dtype=torch.long, device=idx.device)
    last = last.scatter_reduce(0, inverse, position, reduce="amax")
    return idx[last], rows[last]
