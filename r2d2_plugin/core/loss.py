"""The D2 loss and the store step size of the reference code (R2D2.pytorch)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# The reference's store step: λ = 4000 at a batch of B = 512 samples.
REFERENCE_LAMBDA, REFERENCE_BATCH = 4000.0, 512


def d2_loss(logits: torch.Tensor, target_logits: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Per-sample D2 loss α·KL(f ‖ softmax(ỹ)) + β·H(f), f = softmax(z).

    The paper's D2 objective (section "Deep decipher"); the order of the KL, network
    distribution first, is the reference code's ``kl_reverse``. The targets carry no gradient
    (copies of the store's rows, fixed labeled targets), so gradients reach only z.
    """
    log_f = F.log_softmax(logits, dim=-1)
    f = log_f.exp()
    kl = (f * (log_f - F.log_softmax(target_logits, dim=-1))).sum(dim=-1)
    entropy = -(f * log_f).sum(dim=-1)
    return alpha * kl + beta * entropy


def labeled_targets(y: torch.Tensor, num_classes: int, logit: float) -> torch.Tensor:
    """Fixed, never-updated target logits of labeled samples: ``logit`` at the true class."""
    return F.one_hot(y, num_classes).float() * logit


def reference_lambda(batch_size: int, uratio: int) -> float:
    """λ giving the reference's per-sample store step λα/B at USB's batch B = bs·(1 + uratio)."""
    return REFERENCE_LAMBDA * batch_size * (1 + uratio) / REFERENCE_BATCH
