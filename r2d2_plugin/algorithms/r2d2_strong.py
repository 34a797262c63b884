"""``r2d2_strong``: R2-D2 with USB's strong view, beyond the paper.

The faithful ``r2d2`` trains the network on the weak view toward its learned pseudo-labels.
Here the network's prediction on the strong (RandAugment) view is trained toward softmax(ỹ)
with the same D2 loss (or toward argmax ỹ with a cross-entropy: ``r2d2_strong_target_loss``), as
FixMatch trains the strong view toward a target made from the weak view, while the store still
descends from the weak view's prediction. Stages, R2, fine-tune (on the strong view, hard
pseudo-labels), checkpoint and metrics are ``R2D2``'s.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from semilearn.algorithms.utils import SSL_Argument
from semilearn.core.utils import ALGORITHMS

from ..core.loss import d2_loss
from ..errors import ConfigError
from .r2d2 import R2D2


ENTROPY_VIEWS = ("strong", "weak")
TARGET_LOSSES = ("d2", "hard")


@ALGORITHMS.register("r2d2_strong")
class R2D2Strong(R2D2):
    """R2-D2 trained on the strong view. Options (besides ``r2d2``'s):
        - r2d2_strong_T: temperature of the target, softmax(ỹ / T) (1: the store's pseudo-label)
        - r2d2_strong_threshold: unlabeled samples whose pseudo-label's top probability is
          below it are left out of the loss (0: none)
        - r2d2_strong_entropy_view: weak (default; chosen on the validation split) or strong, the
          view of the unlabeled samples' entropy term β·H(f)
        - r2d2_strong_target_loss: d2 (default: α·KL(f ‖ softmax(ỹ / T)), D2's term) or hard
          (α·CE(f, argmax ỹ), FixMatch's loss on the store's hard pseudo-label) for the strong view
    and ``r2d2_repredict_from`` defaults to ema here (chosen on the validation split): R2 takes
    its pseudo-labels from the EMA weights USB evaluates with.
    """

    # USB's BasicDataset serves the weak and the strong view for FixMatch's name.
    ULB_VIEWS = "fixmatch"
    # Chosen on the validation split: at this variant's lrs the network's predictions are much
    # noisier than its EMA's.
    REPREDICT_FROM_DEFAULT = "ema"

    def __init__(self, args: Any, net_builder: Any, tb_log: Any = None, logger: Any = None):
        check_strong_options(args)
        self.T, self.threshold = args.r2d2_strong_T, args.r2d2_strong_threshold
        self.entropy_view, self.target_loss = args.r2d2_strong_entropy_view, args.r2d2_strong_target_loss
        super().__init__(args, net_builder, tb_log, logger)

    def train_step(self, x_lb: torch.Tensor, y_lb: torch.Tensor, idx_ulb: torch.Tensor,
                   x_ulb_w: Optional[torch.Tensor] = None, x_ulb_s: Optional[torch.Tensor] = None
                   ) -> Tuple[Dict[str, Any], Dict[str, float]]:
        """Through warm-up-only epochs USB serves no unlabeled views (``ULB_VIEWS_WARMUP``)."""
        return self.d2_step(x_lb, y_lb, idx_ulb, x_ulb_w, x_ulb_s)

    def per_sample_loss(self, logits: torch.Tensor, target_logits: torch.Tensor, num_lb: int,
                        logits_w: torch.Tensor) -> torch.Tensor:
        """D2 loss against the tempered targets (for the unlabeled samples the hard pseudo-label's
        cross-entropy instead, with ``r2d2_strong_target_loss: hard``), unlabeled samples below
        the threshold masked; the entropy term of the unlabeled samples on the strong view
        (``logits``) or on the weak one (``logits_w``)."""
        ulb_targets = target_logits[num_lb:] / self.T
        keep = torch.softmax(ulb_targets, dim=-1).max(dim=-1).values >= self.threshold
        targets = torch.cat((target_logits[:num_lb], ulb_targets))
        mask = torch.cat((torch.ones(num_lb, device=logits.device), keep.float()))
        if self.target_loss == "hard":
            hard = F.cross_entropy(logits[num_lb:], ulb_targets.argmax(dim=-1), reduction="none")
            target_term = torch.cat((d2_loss(logits[:num_lb], targets[:num_lb], self.alpha, 0.0),
                                     self.alpha * hard))
        else:
            target_term = d2_loss(logits, targets, self.alpha, 0.0)
        entropy_logits = logits if self.entropy_view == "strong" else torch.cat((logits[:num_lb], logits_w))
        return (target_term + d2_loss(entropy_logits, targets, 0.0, self.beta)) * mask

    @classmethod
    def get_argument(cls) -> List[SSL_Argument]:
        """R2-D2's options and the strong view's."""
        return super().get_argument() + [
            SSL_Argument("--r2d2_strong_T", float, 1.0, "temperature of the strong view's target"),
            SSL_Argument("--r2d2_strong_threshold", float, 0.0,
                         "least top pseudo-label probability for an unlabeled sample to count"),
            SSL_Argument("--r2d2_strong_entropy_view", str, "weak",
                         "view whose prediction the entropy term of unlabeled samples is taken on: "
                         "strong or weak"),
            SSL_Argument("--r2d2_strong_target_loss", str, "d2",
                         "strong view's loss toward the store: d2 (α·KL to softmax(ỹ / T)) or hard "
                         "(α·cross-entropy to argmax ỹ)"),
        ]


def check_strong_options(args: Any) -> None:
    """Refuse r2d2_strong options out of range, naming the fix."""
    if not 0 < args.r2d2_strong_T < math.inf:
        raise ConfigError(f"r2d2_strong_T={args.r2d2_strong_T} must be > 0 and finite",
                          "set a positive temperature (1 keeps the pseudo-label as it is)")
    if not 0 <= args.r2d2_strong_threshold < 1:
        raise ConfigError(f"r2d2_strong_threshold={args.r2d2_strong_threshold} must be in [0, 1)",
                          "set a probability below 1 (0 keeps every unlabeled sample)")
    if args.r2d2_strong_target_loss not in TARGET_LOSSES:
        raise ConfigError(f"r2d2_strong_target_loss={args.r2d2_strong_target_loss!r} is not a loss",
                          f"set it to one of {', '.join(TARGET_LOSSES)}")
    if args.r2d2_strong_entropy_view not in ENTROPY_VIEWS:
        raise ConfigError(f"r2d2_strong_entropy_view={args.r2d2_strong_entropy_view!r} is not a view",
                          f"set it to one of {', '.join(ENTROPY_VIEWS)}")
