"""The four-stage R2-D2 schedule on USB's iteration counter.

Stages, with the reference's CIFAR-10 proportions (R2D2.pytorch, in epochs) as defaults:

1. warm-up, 300: supervised training on the labeled data only;
2. D2, 300: deep decipher, starting with a reprediction;
3. R2, 300: D2 with a reprediction every ``repredict_period`` iterations and the network lr
   stepping down at each one (0.12 -> 0.08 -> 0.04 -> 0.004 in the reference);
4. fine-tune, 50: one last reprediction, then cross-entropy on hard pseudo-labels, lr cosine-decayed
   to 0 from 0.01.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Sequence

from ..errors import ConfigError

REFERENCE_STAGE_EPOCHS = (300, 300, 300, 50)
# The options ``StageSchedule.from_args`` reads besides num_train_iter and lr.
SCHEDULE_OPTIONS = ("r2d2_warmup_iter", "r2d2_d2_iter", "r2d2_r2_iter", "r2d2_finetune_iter",
                    "r2d2_repredict_period", "r2d2_lr_d2", "r2d2_lr_r2", "r2d2_lr_finetune", "r2d2_use_r2")
STAGE_NAMES = {1: "warm-up", 2: "D2", 3: "R2", 4: "fine-tune"}
# The reference's stage-1 cosine ramp reaches 0 at 350 epochs but stops at 300.
WARMUP_RAMPDOWN_RATIO = 350 / 300


def none_or(kind: type) -> Callable[[Any], Any]:
    """An option type that also reads USB's spelling of unset (``None``)."""
    def parse(value: Any) -> Any:
        return None if value in (None, "None", "none", "") else kind(value)

    parse.__name__ = kind.__name__  # argparse's messages and docs/options.md name the type
    return parse


def parse_float_list(value: Any) -> List[float]:
    """Read ``r2d2_lr_r2``'s floats, given as a YAML list or a comma-separated string."""
    if isinstance(value, str):
        value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    if isinstance(value, (int, float)):
        value = [value]
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"r2d2_lr_r2={value!r} is not a list of numbers", "give r2d2_lr_r2 as "
                          "numbers, e.g. 0.12,0.08,0.04,0.004 or [0.12, 0.08, 0.04, 0.004]") from err


@dataclass
class StageSchedule:
    """Stage lengths (in iterations), repredict period and per-stage learning rates."""

    warmup_iter: int
    d2_iter: int
    r2_iter: int
    finetune_iter: int
    repredict_period: int
    lr_warmup: float
    lr_d2: float
    lr_r2: List[float] = field(default_factory=list)
    lr_finetune: float = 0.01
    use_r2: bool = True

    @classmethod
    def from_args(cls, args: Any) -> "StageSchedule":
        """Build the schedule from USB's argument namespace, filling unset lengths by the
        reference's 300:300:300:50 proportions of ``num_train_iter``; then validate it."""
        total = int(args.num_train_iter)
        share = [round(total * e / sum(REFERENCE_STAGE_EPOCHS)) for e in REFERENCE_STAGE_EPOCHS]
        given = [args.r2d2_warmup_iter, args.r2d2_d2_iter, args.r2d2_r2_iter, args.r2d2_finetune_iter]
        if all(g is None for g in given):
            share[2] = total - share[0] - share[1] - share[3]
            lengths = share
        else:
            lengths = [share[i] if g is None else int(g) for i, g in enumerate(given)]
        lr_r2 = parse_float_list(args.r2d2_lr_r2)
        period = args.r2d2_repredict_period
        if period is None:
            period = max(1, lengths[2] // max(1, len(lr_r2)))
        schedule = cls(*lengths, repredict_period=int(period), lr_warmup=float(args.lr),
                       lr_d2=float(args.r2d2_lr_d2), lr_r2=lr_r2,
                       lr_finetune=float(args.r2d2_lr_finetune), use_r2=bool(args.r2d2_use_r2))
        schedule.validate(total)
        return schedule

    def validate(self, num_train_iter: int) -> None:
        """Refuse stages that do not add up to ``num_train_iter`` or cannot run, naming the fix."""
        lengths = dict(r2d2_warmup_iter=self.warmup_iter, r2d2_d2_iter=self.d2_iter,
                       r2d2_r2_iter=self.r2_iter, r2d2_finetune_iter=self.finetune_iter)
        for name, value in lengths.items():
            if value < 0:
                raise ConfigError(f"{name}={value} is negative",
                                  "give every stage length as an iteration count >= 0")
        if sum(lengths.values()) != num_train_iter:
            raise ConfigError(
                f"the R2-D2 stage lengths {lengths} add up to {sum(lengths.values())}, "
                f"not num_train_iter={num_train_iter}",
                "make the four r2d2_*_iter options add up to num_train_iter, or leave all four "
                "unset to split num_train_iter in the reference's 300:300:300:50 proportions")
        if self.d2_iter + self.r2_iter == 0:
            raise ConfigError("r2d2_d2_iter and r2d2_r2_iter are both 0: no semi-supervised stage",
                              "give the D2 or R2 stage at least one iteration")
        if self.repredict_period < 1:
            raise ConfigError(f"r2d2_repredict_period={self.repredict_period} must be >= 1",
                              "set it to a positive iteration count (default: r2d2_r2_iter // len(r2d2_lr_r2))")
        if not self.lr_r2:
            raise ConfigError("r2d2_lr_r2 is empty", "give one lr per R2 repredict period, "
                              "e.g. [0.12, 0.08, 0.04, 0.004]")
        if self.r2_iter and self.r2_iter // self.repredict_period < len(self.lr_r2):
            raise ConfigError(f"the R2 stage (r2d2_r2_iter={self.r2_iter}) holds fewer than "
                              f"len(r2d2_lr_r2)={len(self.lr_r2)} periods of "
                              f"r2d2_repredict_period={self.repredict_period} iterations",
                              "shorten r2d2_repredict_period, lengthen r2d2_r2_iter or give fewer "
                              "r2d2_lr_r2 values")
        if not 0 < self.lr_warmup < math.inf:
            raise ConfigError(f"lr={self.lr_warmup} must be > 0 for r2d2 (it is the warm-up lr and "
                              "the base of the stage schedule)", "set lr to a positive number")
        for name, lr in [("r2d2_lr_d2", self.lr_d2),
                         ("r2d2_lr_finetune", self.lr_finetune)] + [("r2d2_lr_r2", v) for v in self.lr_r2]:
            if not 0 <= lr < math.inf:
                raise ConfigError(f"{name}={lr} is not a finite learning rate >= 0",
                                  f"set {name} to a non-negative number")

    @property
    def boundaries(self) -> Sequence[int]:
        """First iteration of stages 1..4."""
        b2 = self.warmup_iter
        b3 = b2 + self.d2_iter
        b4 = b3 + self.r2_iter
        return (0, b2, b3, b4)

    def stage(self, it: int) -> int:
        """Stage (1-4) that iteration ``it`` (0-based, USB's ``alg.it``) belongs to."""
        _, b2, b3, b4 = self.boundaries
        if it < b2:
            return 1
        if it < b3:
            return 2
        if it < b4:
            return 3
        return 4

    @property
    def repredict_iters(self) -> List[int]:
        """Iterations before which R2 overwrites the store with fresh predictions: the start of D2,
        the start of each R2 period (unless ``use_r2`` is off: D2 without R2, an ablation), and
        the start of the fine-tune."""
        _, b2, b3, b4 = self.boundaries
        its = {b2}
        if self.use_r2:
            its.update(b3 + k * self.repredict_period for k in range(self.r2_repredictions))
        if self.finetune_iter > 0:
            its.add(b4)
        return sorted(its)

    @property
    def r2_repredictions(self) -> int:
        """R2 periods in stage 3, each starting with a reprediction: one per ``lr_r2`` value,
        ``repredict_period`` iterations each, the last taking the remainder of ``r2_iter``."""
        return min(self.r2_iter // self.repredict_period, len(self.lr_r2))

    def lr(self, it: int) -> float:
        """Network learning rate at iteration ``it``."""
        stage = self.stage(it)
        _, b2, b3, b4 = self.boundaries
        if stage == 1:
            ramp = self.warmup_iter * WARMUP_RAMPDOWN_RATIO
            return self.lr_warmup * 0.5 * (1.0 + math.cos(math.pi * it / ramp))
        if stage == 2:
            return self.lr_d2
        if stage == 3:
            return self.lr_r2[min((it - b3) // self.repredict_period, self.r2_repredictions - 1)]
        if self.finetune_iter == 0:
            return 0.0
        done = min(it - b4, self.finetune_iter)
        return self.lr_finetune * 0.5 * (1.0 + math.cos(math.pi * done / self.finetune_iter))
