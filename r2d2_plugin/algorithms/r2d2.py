"""R2-D2 (Wang & Wu, "Repetitive Reprediction Deep Decipher for Semi-Supervised Learning",
AAAI 2020) as a USB algorithm, following the authors' reference code (R2D2.pytorch)."""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from semilearn.algorithms.utils import SSL_Argument, str2bool
from semilearn.core.algorithmbase import AlgorithmBase
from semilearn.core.utils import ALGORITHMS
from semilearn.datasets.cv_datasets.datasetbase import BasicDataset

from ..core import collectives
from ..core.loss import d2_loss, labeled_targets, reference_lambda
from ..core.schedule import SCHEDULE_OPTIONS, StageSchedule, none_or
from ..core.sharded_store import ShardedPseudoLabelStore
from ..core.store import PseudoLabelStore, check_store_options
from ..errors import ConfigError
from .hooks import RepredictHook, WarmupViewsHook

# What R2 may repredict with: the network's or the EMA weights on the eval view, or the training
# steps' weak views.
REPREDICT_FROM = ("network", "ema", "weak_view")
# The losses labeled samples may train with after the warm-up.
LABELED_LOSSES = ("d2", "ce")
# The metrics R2-D2 adds to USB's log dict (the store-wide ones on log and eval iterations).
METRIC_KEYS = ("r2d2/stage", "r2d2/repredictions", "r2d2/pseudo_label_entropy", "r2d2/pseudo_label_acc")
# USB options that define a run's data, net and batches: a resume must keep them (with the
# algorithm's options and its stage schedule; only where the store lives may change).
RUN_OPTIONS = ("dataset", "num_classes", "num_labels", "seed", "eval_split", "include_lb_to_ulb",
               "net", "batch_size", "uratio", "num_train_iter")
PLACEMENT_OPTIONS = ("r2d2_store_dtype", "r2d2_store_device")


@ALGORITHMS.register("r2d2")
class R2D2(AlgorithmBase):
    """R2-D2: every unlabeled sample owns learnable pseudo-label logits (``PseudoLabelStore``),
    the network is trained toward them and they descend the same loss (D2); R2
    (``RepredictHook``) re-initializes them from the network's predictions on a schedule.

    Stages (``StageSchedule``): 1 supervised warm-up, 2 D2, 3 D2 with repeated repredictions,
    4 fine-tune on hard pseudo-labels. Options:
        - r2d2_alpha, r2d2_beta: weights of the KL and entropy terms (0.1, 0.03)
        - r2d2_lambda: store learning rate λ (default: the reference's λα/B per-sample step)
        - r2d2_labeled_logit: logit at the true class of a labeled sample's fixed target (10)
        - r2d2_labeled_loss: d2 (the reference: labeled samples in the D2 loss toward their fixed
          targets, within the batch mean) or ce (USB's supervised loss, as in the warm-up:
          cross-entropy, mean over the labeled samples) after the warm-up
        - r2d2_{warmup,d2,r2,finetune}_iter, r2d2_repredict_period, r2d2_lr_{d2,r2,finetune}
        - r2d2_use_r2: False for D2 without R2 in stage 3 (the paper's flattening ablation)
        - r2d2_repredict_from: network (the reference) or ema (USB's EMA weights, the ones it
          evaluates) for R2's predictions on the eval view, or weak_view (each row the network's
          prediction on its weak view in the step that first reads it, as FixMatch's target)
        - r2d2_lazy_repredict: R2 fills each row from a frozen copy of the net when training first
          reads it (``RepredictHook``), instead of passing over the whole unlabeled set
        - r2d2_store_dtype (fp32 | bf16 | fp16), r2d2_store_device (device | cpu_pinned | sharded):
          how the store is kept (``PseudoLabelStore``, ``ShardedPseudoLabelStore``)
    """

    # The unlabeled views USB's BasicDataset serves, chosen by algorithm name: weak only.
    ULB_VIEWS = "pseudolabel"
    # Through warm-up-only epochs (``WarmupViewsHook``): indices only, USB's ``supervised`` name.
    ULB_VIEWS_WARMUP = "supervised"
    # Default of ``r2d2_repredict_from``: the reference repredicts with the network.
    REPREDICT_FROM_DEFAULT = "network"

    def __init__(self, args: Any, net_builder: Any, tb_log: Any = None, logger: Any = None):
        check_loss_options(args)
        self.schedule = StageSchedule.from_args(args)
        super().__init__(args, net_builder, tb_log, logger)
        lam = args.r2d2_lambda
        self.init(alpha=args.r2d2_alpha, beta=args.r2d2_beta,
                  lam=default_lambda(args) if lam is None else lam,
                  labeled_logit=args.r2d2_labeled_logit)

    def init(self, alpha: float, beta: float, lam: float, labeled_logit: float) -> None:
        """The loss weights and the empty pseudo-label store, one row per unlabeled sample."""
        self.alpha, self.beta, self.lam, self.labeled_logit = alpha, beta, lam, labeled_logit
        ulb = self.dataset_dict["train_ulb"]
        labels = torch.as_tensor(np.asarray(ulb.targets))
        dtype, place = self.args.r2d2_store_dtype, self.args.r2d2_store_device
        self.store = (ShardedPseudoLabelStore(len(ulb), self.num_classes, labels, dtype) if place == "sharded"
                      else PseudoLabelStore(len(ulb), self.num_classes, labels, dtype=dtype, place=place))
        self.repredictions = 0
        self.repredict_seconds = 0.0

    def set_dataset(self) -> Dict[str, Any]:
        """USB's datasets, with the unlabeled set serving the weak view only: R2-D2 never reads
        the strong view, so it is not computed (USB's BasicDataset picks views by algorithm name,
        and ``pseudolabel`` is its weak-only name; ``ULB_VIEWS``)."""
        dataset_dict = super().set_dataset()
        ulb = dataset_dict["train_ulb"]
        if not isinstance(ulb, BasicDataset):
            raise ConfigError(f"r2d2 needs an image dataset served by USB's BasicDataset; "
                              f"'{self.args.dataset}' gives {type(ulb).__name__}",
                              "use a classic_cv / usb_cv dataset, digits or npz")
        ulb.alg = self.ULB_VIEWS
        return dataset_dict

    def set_optimizer(self) -> Tuple[torch.optim.Optimizer, LambdaLR]:
        """USB's optimizer; the lr follows the stage schedule instead of USB's cosine."""
        optimizer, _ = super().set_optimizer()
        schedule, base_lr = self.schedule, self.args.lr
        scheduler = LambdaLR(optimizer, lambda it: schedule.lr(it) / base_lr)
        return optimizer, scheduler

    def set_hooks(self) -> None:
        """USB's hooks, with R2's ``RepredictHook`` and the warm-up's view switch run first."""
        self.repredictor = RepredictHook()
        self.register_hook(self.repredictor, "RepredictHook", "HIGHEST")
        self.register_hook(WarmupViewsHook(), "WarmupViewsHook", "HIGHEST")
        super().set_hooks()

    def labeled_targets(self, y_lb: torch.Tensor) -> torch.Tensor:
        """Fixed, never-updated target logits of labeled samples."""
        return labeled_targets(y_lb, self.num_classes, self.labeled_logit)

    def train_step(self, x_lb: torch.Tensor, y_lb: torch.Tensor, idx_ulb: torch.Tensor,
                   x_ulb_w: Optional[torch.Tensor] = None) -> Tuple[Dict[str, Any], Dict[str, float]]:
        """Through warm-up-only epochs USB serves no unlabeled views (``ULB_VIEWS_WARMUP``)."""
        return self.d2_step(x_lb, y_lb, idx_ulb, x_ulb_w)

    def d2_step(self, x_lb: torch.Tensor, y_lb: torch.Tensor, idx_ulb: torch.Tensor,
                x_ulb_w: torch.Tensor, x_ulb_s: Optional[torch.Tensor] = None
                ) -> Tuple[Dict[str, Any], Dict[str, float]]:
        """One step of the current stage. The network is trained on the weak view, or on the
        strong view ``x_ulb_s`` when given (``r2d2_strong``); the store always descends from the
        weak view's prediction."""
        stage = self.schedule.stage(self.it)
        num_lb, num_ulb = y_lb.shape[0], idx_ulb.shape[0]
        with self.amp_cm():
            if stage == 1:
                outputs = self.model(x_lb)
                feat_dict = {"x_lb": outputs["feat"]}
                sup_loss = self.ce_loss(outputs["logits"], y_lb, reduction="mean")
                unsup_loss = torch.zeros_like(sup_loss)
            else:
                views = (x_lb, x_ulb_w) if x_ulb_s is None else (x_lb, x_ulb_w, x_ulb_s)
                outputs = self.model(torch.cat(views))
                feat_dict = dict(zip(("x_lb", "x_ulb_w", "x_ulb_s"),
                                     outputs["feat"].split([num_lb, *[num_ulb] * (len(views) - 1)])))
                logits = outputs["logits"].float()
                logits_w = logits[num_lb:num_lb + num_ulb]
                self.repredictor.fill(self, idx_ulb, logits_w.detach())
                trained = torch.cat((logits[:num_lb], logits[-num_ulb:]))
                batch = num_lb + num_ulb
                if stage == 4:
                    targets = torch.cat((y_lb, self.store.hard_labels(idx_ulb)))
                    per_sample = F.cross_entropy(trained, targets, reduction="none")
                else:
                    targets = torch.cat((self.labeled_targets(y_lb), self.store.read(idx_ulb)))
                    per_sample = self.per_sample_loss(trained, targets, num_lb, logits_w)
                sup_loss = (self.ce_loss(trained[:num_lb], y_lb, reduction="mean")
                            if self.args.r2d2_labeled_loss == "ce" else per_sample[:num_lb].sum() / batch)
                unsup_loss = per_sample[num_lb:].sum() / batch
            total_loss = sup_loss + unsup_loss
        self.check_finite(total_loss, stage)
        if stage in (2, 3):
            self.descend_store(idx_ulb, torch.softmax(logits_w.detach(), dim=-1), batch)

        out_dict = self.process_out_dict(loss=total_loss, feat=feat_dict)
        log_dict = self.process_log_dict(sup_loss=sup_loss.item(), unsup_loss=unsup_loss.item(),
                                         total_loss=total_loss.item())
        log_dict.update(self.r2d2_metrics(stage))
        return out_dict, log_dict

    def descend_store(self, idx_ulb: torch.Tensor, probs: torch.Tensor, batch: int) -> None:
        """D2's store step from this step's weak-view predictions. Under DDP every process
        applies the updates of all processes (gathered in rank order), so the store stays
        identical everywhere, with the step λα/B of the global batch B (processes x ``batch``),
        as one process with that batch takes it."""
        if self.in_process_group():
            idx_ulb, probs = collectives.gather_rows(idx_ulb, probs)
            batch *= self.world_size
        self.store.descend(idx_ulb, probs, step=self.lam * self.alpha / batch)

    def repredicted(self, seconds: float) -> None:
        """Count one reprediction of R2 (``RepredictHook``) that took ``seconds``, and log the
        store it left."""
        self.repredictions += 1
        self.repredict_seconds += seconds
        self.print_fn(f"r2d2: reprediction {self.repredictions} at iteration {self.it}: "
                      f"{self.store_summary()}")

    def store_summary(self) -> str:
        """What a reprediction left in the store, for the log."""
        if self.repredictor.filled() is not None:
            source = "network's weak-view" if self.args.r2d2_repredict_from == "weak_view" else "frozen network's"
            return f"each row takes the {source} logits when training first reads it"
        accuracy = self.store.accuracy()
        known = "" if math.isnan(accuracy) else f"pseudo-label acc {accuracy:.4f}, "
        return f"{known}entropy {self.store.mean_entropy():.4f}"

    def evaluate(self, eval_dest: str = "eval", *args: Any, **kwargs: Any) -> Optional[Dict[str, float]]:
        """USB's evaluation. USB evaluates on every process just before each checkpoint (its
        CheckpointHook then saves on rank 0, and the final save follows the last iteration's
        evaluation), so the store prepares what a save needs here (``before_save``, collective)."""
        if eval_dest == "eval":
            self.store.before_save()
        return super().evaluate(eval_dest, *args, **kwargs)

    def in_process_group(self) -> bool:
        """Whether this run is distributed over more than one process."""
        return bool(self.distributed) and collectives.in_group()

    def per_sample_loss(self, logits: torch.Tensor, target_logits: torch.Tensor, num_lb: int,
                        logits_w: torch.Tensor) -> torch.Tensor:
        """The D2 loss of every sample of the batch (labeled first) in stages 2 and 3; ``logits``
        are the trained views' (here the weak view's, ``logits_w`` again for the unlabeled part)."""
        return d2_loss(logits, target_logits, self.alpha, self.beta)

    def r2d2_metrics(self, stage: int) -> Dict[str, float]:
        """R2-D2's metrics; the store-wide ones only on log and eval iterations once R2 has filled
        the store (before its first reprediction it holds no pseudo-labels), the pseudo-label
        accuracy only where every unlabeled sample's true label is known. With lazy R2 they are
        over the rows filled since the last reprediction (those training has read)."""
        metrics = {"r2d2/stage": float(stage), "r2d2/repredictions": float(self.repredictions)}
        done = self.it + 1
        logged = any(n > 0 and done % n == 0 for n in (self.num_log_iter, self.num_eval_iter))
        if self.repredictions and logged:
            filled = self.repredictor.filled()
            for key, value in (("r2d2/pseudo_label_entropy", self.store.mean_entropy(filled)),
                               ("r2d2/pseudo_label_acc", self.store.accuracy(filled))):
                if not math.isnan(value):
                    metrics[key] = value
        return metrics

    def check_finite(self, loss: torch.Tensor, stage: int) -> None:
        """Stop before a NaN or infinite loss is applied, saying how to resume."""
        if not torch.isfinite(loss):
            path = f"{self.save_dir}/{self.save_name}/latest_model.pth"
            raise FloatingPointError(
                f"r2d2: the loss is {loss.item()} at iteration {self.it} (stage {stage}); training "
                f"stopped before this step was applied, and the last checkpoint is untouched. Fix: "
                f"lower lr / r2d2_lr_* or r2d2_lambda, then resume with resume: True, "
                f"load_path: {path}")

    def get_save_dict(self) -> Dict[str, Any]:
        """USB's checkpoint with R2-D2's state: store, repredictions, lazy R2 and RNG states."""
        save_dict = super().get_save_dict()
        save_dict["r2d2"] = {
            "store": self.store.state_dict(),
            "stage": self.schedule.stage(self.it),  # of the last finished iteration; informational
            "repredictions": self.repredictions,
            "repredict_seconds": self.repredict_seconds,
            "lazy_repredict": self.repredictor.state_dict(),
            "rng": rng_state(),
            "run": self.run_settings(),
        }
        return save_dict

    def run_settings(self) -> Dict[str, Any]:
        """What a resume must keep: ``RUN_OPTIONS``, the algorithm's options (but where the store
        lives) and the stage schedule they make (lengths and lrs as the run uses them)."""
        skip = (*PLACEMENT_OPTIONS, *SCHEDULE_OPTIONS)
        names = [*RUN_OPTIONS, *(o.name[2:] for o in self.get_argument() if o.name[2:] not in skip)]
        return {**{name: getattr(self.args, name, None) for name in names},
                **dataclasses.asdict(self.schedule)}

    def check_run_settings(self, load_path: str, saved: Optional[Dict[str, Any]]) -> None:
        """Refuse to resume a checkpoint written with other ``run_settings`` (checkpoints from
        before they were saved are not checked)."""
        now = self.run_settings()
        changed = [f"{name} {saved[name]!r} (now {now.get(name)!r})" for name in saved or {}
                   if now.get(name) != saved[name]]
        if changed:
            raise ConfigError(f"{load_path} was written by a run with other settings: {', '.join(changed)}",
                              "resume with the checkpoint's settings, or start a new run (another "
                              "save_name, resume: False)")

    def load_model(self, load_path: str) -> Dict[str, Any]:
        """USB's resume, restoring R2-D2's state; refuses a checkpoint without it."""
        checkpoint = super().load_model(load_path)
        if "r2d2" not in checkpoint:
            raise ConfigError(f"{load_path} has no R2-D2 state (store, stage, repredictions)",
                              "resume an r2d2 run from a checkpoint that r2d2 wrote")
        state = checkpoint["r2d2"]
        self.check_run_settings(load_path, state.get("run"))
        self.store.load_state_dict(state["store"])
        self.repredictions = state["repredictions"]
        self.repredict_seconds = state["repredict_seconds"]
        self.repredictor.load_state_dict(self, state.get("lazy_repredict"))
        set_rng_state(state["rng"])
        return checkpoint

    @classmethod
    def get_argument(cls) -> List[SSL_Argument]:
        """R2-D2's options, each declared once (defaults: the reference's)."""
        return [
            SSL_Argument("--r2d2_alpha", float, 0.1, "weight α of KL(f || softmax(y~))"),
            SSL_Argument("--r2d2_beta", float, 0.03, "weight β of the entropy H(f)"),
            SSL_Argument("--r2d2_lambda", none_or(float), None,
                         "store lr λ; default 4000·B/512 (the reference's step at the global batch B)"),
            SSL_Argument("--r2d2_labeled_logit", float, 10.0, "true-class logit of labeled targets"),
            SSL_Argument("--r2d2_labeled_loss", str, "d2",
                         "labeled samples' loss after the warm-up: d2 (the reference: the D2 loss "
                         "toward their fixed targets, in the batch mean) or ce (USB's supervised "
                         "cross-entropy, mean over the labeled samples)"),
            SSL_Argument("--r2d2_warmup_iter", none_or(int), None,
                         "stage 1 length (all four unset: num_train_iter split 300:300:300:50)"),
            SSL_Argument("--r2d2_d2_iter", none_or(int), None, "stage 2 length"),
            SSL_Argument("--r2d2_r2_iter", none_or(int), None, "stage 3 length"),
            SSL_Argument("--r2d2_finetune_iter", none_or(int), None, "stage 4 length"),
            SSL_Argument("--r2d2_repredict_period", none_or(int), None,
                         "length of the len(r2d2_lr_r2) R2 periods, the last taking the remainder "
                         "(default r2d2_r2_iter / len(r2d2_lr_r2))"),
            SSL_Argument("--r2d2_lr_d2", float, 0.12, "network lr in stage 2"),
            SSL_Argument("--r2d2_lr_r2", str, "0.12,0.08,0.04,0.004",
                         "network lr in each R2 period of stage 3"),
            SSL_Argument("--r2d2_lr_finetune", float, 0.01, "stage 4 lr, cosine-decayed to 0"),
            SSL_Argument("--r2d2_use_r2", str2bool, True,
                         "False: stage 3 keeps its lr steps but does not repredict (ablation)"),
            SSL_Argument("--r2d2_repredict_from", str, cls.REPREDICT_FROM_DEFAULT,
                         "what R2 repredicts with: network (the reference) or ema (USB's EMA) on "
                         "the eval view, or weak_view (the network on the training step's weak "
                         "view, train mode, when a row is first read; one process only)"),
            SSL_Argument("--r2d2_lazy_repredict", str2bool, False,
                         "True: R2 freezes a copy of that network and gives each row its logits "
                         "when training first reads it (the full pass's values, computed only for "
                         "the rows read before the next reprediction; one process only)"),
            SSL_Argument("--r2d2_store_dtype", str, "fp32",
                         "kept precision of the pseudo-label store: fp32, bf16 or fp16 "
                         "(computations stay fp32)"),
            SSL_Argument("--r2d2_store_device", str, "device",
                         "where the store lives: device (with the model), cpu_pinned (CPU memory, "
                         "pinned when CUDA exists, rows moved per batch) or sharded (with the model, "
                         "split across torchrun's processes)"),
        ]


def check_loss_options(args: Any) -> None:
    """Reject loss and store options outside their domain before anything is built."""
    for name in ("r2d2_alpha", "r2d2_beta"):
        value = getattr(args, name)
        if not 0 <= value < math.inf:
            raise ConfigError(f"{name}={value} must be >= 0 and finite",
                              f"set {name} to a non-negative weight (paper's safe default: "
                              f"r2d2_alpha 0.1, r2d2_beta 0.03)")
    lam = args.r2d2_lambda
    if lam is not None and not 0 < lam < math.inf:
        raise ConfigError(f"r2d2_lambda={lam} must be > 0 and finite",
                          "set a positive store lr, or leave r2d2_lambda unset for the reference's "
                          f"4000·B/512 (= {default_lambda(args):g} here)")
    if not 0 < args.r2d2_labeled_logit < math.inf:
        raise ConfigError(f"r2d2_labeled_logit={args.r2d2_labeled_logit} must be > 0 and finite",
                          "set the true-class logit of labeled targets to a positive number (the "
                          "reference's 10)")
    if args.r2d2_repredict_from not in REPREDICT_FROM:
        raise ConfigError(f"r2d2_repredict_from={args.r2d2_repredict_from!r} is not a source of predictions",
                          f"set it to one of {', '.join(REPREDICT_FROM)}")
    if args.r2d2_labeled_loss not in LABELED_LOSSES:
        raise ConfigError(f"r2d2_labeled_loss={args.r2d2_labeled_loss!r} is not a labeled loss",
                          f"set it to one of {', '.join(LABELED_LOSSES)}")
    check_store_options(args.r2d2_store_dtype, args.r2d2_store_device)


def default_lambda(args: Any) -> float:
    """The reference's store step at the run's global batch: every process's labeled and
    unlabeled samples (``descend_store`` divides by that batch)."""
    return reference_lambda(args.batch_size * args.world_size, args.uratio)


def rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states, in types that ``torch.load`` accepts with
    ``weights_only=True`` (USB's ``load_model`` loads with the default)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's GPU: another machine may have fewer
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore the RNG states that ``rng_state`` saved."""
    name, keys, pos, has_gauss, gauss = state["numpy"]
    random.setstate(state["python"])
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        torch.cuda.set_rng_state(cuda if isinstance(cuda, torch.Tensor) else cuda[torch.cuda.current_device()])
