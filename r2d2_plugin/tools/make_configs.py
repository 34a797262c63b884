"""Write R2-D2 configs for USB's classic_cv and usb_cv settings from USB's FixMatch settings.

    python -m r2d2_plugin.tools.make_configs --out configs

``FIXMATCH_COMMON`` / ``FIXMATCH_SETTINGS`` are the values of USB's
``config/classic_cv/fixmatch/fixmatch_<dataset>_<labels>_0.yaml`` and ``USB_CV_COMMON`` /
``USB_CV_SETTINGS`` those of ``config/usb_cv/fixmatch/...`` (both folders are in USB's GitHub
repository, not in the wheel). The generated configs keep every value except the FixMatch-only
options (``hard_label``, ``T``, ``p_cutoff``), the names, and the launcher settings in
``SINGLE_PROCESS``; they add the R2-D2 options. Output: ``<out>/classic_cv/`` and ``<out>/usb_cv/``.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Optional, Sequence

from ..algorithms.r2d2 import R2D2
from ..core.loss import REFERENCE_BATCH, REFERENCE_LAMBDA, reference_lambda
from ..core.schedule import parse_float_list

FIXMATCH_COMMON: Dict[str, Any] = {
    "overwrite": True, "use_tensorboard": True, "use_wandb": False, "epoch": 1024,
    "num_train_iter": 1048576, "num_eval_iter": 5120, "num_log_iter": 256, "batch_size": 64,
    "eval_batch_size": 256, "ulb_loss_ratio": 1.0, "uratio": 7, "ema_m": 0.999,
    "crop_ratio": 0.875, "img_size": 32, "optim": "SGD", "lr": 0.03, "momentum": 0.9,
    "weight_decay": 0.0005, "layer_decay": 1.0, "amp": False, "clip_grad": 0.0, "use_cat": True,
    "net": "wrn_28_2", "net_from_name": False, "data_dir": "./data", "train_sampler": "RandomSampler",
    "num_workers": 1, "seed": 0, "world_size": 1, "rank": 0, "dist_url": "tcp://127.0.0.1:10008",
    "dist_backend": "nccl",
}
# (dataset, num_labels): the values that differ from FIXMATCH_COMMON.
FIXMATCH_SETTINGS: Dict[tuple, Dict[str, Any]] = {
    **{("cifar10", n): {"num_classes": 10} for n in (40, 250, 4000)},
    **{("cifar100", n): {"num_classes": 100, "weight_decay": 0.001} for n in (400, 2500, 10000)},
    **{("svhn", n): {"num_classes": 10} for n in (40, 250, 1000)},
    **{("stl10", n): {"num_classes": 10, "img_size": 96, "net": "wrn_var_37_2"} for n in (40, 250, 1000)},
}
# usb_cv: pretrained ViTs fine-tuned with AdamW at USB's batch 8 + 8.
USB_CV_COMMON: Dict[str, Any] = {
    "overwrite": True, "use_tensorboard": True, "use_wandb": False, "epoch": 200,
    "num_train_iter": 204800, "num_log_iter": 256, "num_eval_iter": 2048, "batch_size": 8,
    "eval_batch_size": 16, "num_warmup_iter": 5120, "uratio": 1, "ema_m": 0.0,
    "ulb_loss_ratio": 1.0, "img_size": 32, "crop_ratio": 0.875, "optim": "AdamW", "momentum": 0.9,
    "weight_decay": 0.0005, "amp": False, "clip_grad": 0.0, "use_cat": True, "net_from_name": False,
    "data_dir": "./data", "train_sampler": "RandomSampler", "num_workers": 4, "seed": 0,
    "world_size": 1, "rank": 0, "dist_backend": "nccl", "use_pretrain": True,
}
USB_PRETRAINED = "https://github.com/microsoft/Semi-supervised-learning/releases/download/v.0.0.0/"
USB_CV_DATASETS: Dict[str, Dict[str, Any]] = {
    "cifar100": {"lr": 0.0005, "layer_decay": 0.5, "net": "vit_small_patch2_32", "num_classes": 100,
                 "pretrain_path": USB_PRETRAINED + "vit_small_patch2_32_mlp_im_1k_32.pth"},
    "eurosat": {"lr": 5e-05, "layer_decay": 1.0, "net": "vit_small_patch2_32", "num_classes": 10,
                "pretrain_path": USB_PRETRAINED + "vit_small_patch2_32_mlp_im_1k_32.pth"},
    "semi_aves": {"img_size": 224, "lr": 0.001, "layer_decay": 0.65, "net": "vit_small_patch16_224",
                  "num_classes": 200, "pretrain_path": USB_PRETRAINED + "vit_small_patch16_224_mlp_im_1k_224.pth"},
    "stl10": {"img_size": 96, "lr": 0.0001, "layer_decay": 0.65, "net": "vit_base_patch16_96",
              "num_classes": 10, "pretrain_path": USB_PRETRAINED + "mae_pretrain_vit_base.pth"},
    "tissuemnist": {"crop_ratio": 0.95, "lr": 5e-05, "layer_decay": 0.95, "net": "vit_tiny_patch2_32",
                    "num_classes": 8, "pretrain_path": USB_PRETRAINED + "vit_tiny_patch2_32_mlp_im_1k_32.pth"},
}
USB_CV_SETTINGS: Dict[tuple, Dict[str, Any]] = {
    (dataset, n): USB_CV_DATASETS[dataset]
    for dataset, n in (("cifar100", 200), ("cifar100", 400), ("eurosat", 20), ("eurosat", 40),
                       ("semi_aves", 3959), ("stl10", 40), ("stl10", 100), ("tissuemnist", 80),
                       ("tissuemnist", 400))
}
# USB's configs launch one process per GPU through torch.multiprocessing; this launcher runs one
# process (CPU or one GPU), and refuses `resume: True` without an existing checkpoint.
SINGLE_PROCESS = {"multiprocessing_distributed": False, "gpu": 0, "resume": False, "load_path": None}
# r2d2's own defaults (the reference's values), written out in every config.
DEFAULTS = {option.name.lstrip("-"): option.default for option in R2D2.get_argument()}
R2D2_OPTIONS: Dict[str, Any] = {
    **{k: DEFAULTS[k] for k in ("r2d2_alpha", "r2d2_beta", "r2d2_labeled_logit", "r2d2_lr_d2",
                                "r2d2_lr_finetune")},
    "r2d2_lr_r2": parse_float_list(DEFAULTS["r2d2_lr_r2"]),
}
# The reference's network lrs relative to its D2 lr (0.12 -> 0.08 -> 0.04 -> 0.004, fine-tune 0.01).
R2_LR_RATIOS = [lr / DEFAULTS["r2d2_lr_d2"] for lr in R2D2_OPTIONS["r2d2_lr_r2"]]
FINETUNE_LR_RATIO = DEFAULTS["r2d2_lr_finetune"] / DEFAULTS["r2d2_lr_d2"]


def r2d2_config(benchmark: str, dataset: str, num_labels: int) -> Dict[str, Any]:
    """classic_cv: the reference's SGD lrs as they are (its batch, 512, is USB's 64 x 8).
    usb_cv: USB's AdamW fine-tuning lr is the D2 lr and the reference's ratios give the others."""
    name = f"r2d2_{dataset}_{num_labels}_0"
    common, settings = ((FIXMATCH_COMMON, FIXMATCH_SETTINGS) if benchmark == "classic_cv"
                        else (USB_CV_COMMON, USB_CV_SETTINGS))
    config = {"algorithm": "r2d2", "save_dir": f"./saved_models/{benchmark}", "save_name": name,
              **common, **settings[(dataset, num_labels)],
              "num_labels": num_labels, "dataset": dataset, **SINGLE_PROCESS, **R2D2_OPTIONS}
    if benchmark == "usb_cv":
        lr = config["lr"]
        config.update(r2d2_lr_d2=lr, r2d2_lr_r2=[float(f"{lr * r:.3g}") for r in R2_LR_RATIOS],
                      r2d2_lr_finetune=float(f"{lr * FINETUNE_LR_RATIO:.3g}"))
    config["r2d2_lambda"] = reference_lambda(config["batch_size"], config["uratio"])
    return config


HEADER = """# R2-D2 on {dataset}, {num_labels} labels: USB's {benchmark} FixMatch setting with the algorithm
# part replaced (made by `python -m r2d2_plugin.tools.make_configs`; do not edit by hand).
# Stages: r2d2_*_iter unset = num_train_iter split 300:300:300:50 as in the reference
# (warm-up / D2 / R2 with 4 repredictions / fine-tune); lr = the stage-1 (warm-up) lr.
# r2d2_lambda = {ref_lam:g} * batch_size * (1 + uratio) / {ref_batch} = {lam:g}: the reference's per-sample
# store step (lambda * alpha / B = {ref_lam:g} * alpha / {ref_batch}) at USB's batch B = {batch}.
"""
USB_CV_NOTE = """# usb_cv: network lrs = USB's AdamW lr for D2, then the reference's ratios (x 2/3, 1/3, 1/30;
# fine-tune x 1/12). num_warmup_iter is USB's cosine warm-up, which r2d2's stage schedule replaces.
# pretrain_path: download USB's released weights and point this at the local file offline.
"""


def to_yaml(config: Dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if v is None:
            return "None"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    return "".join(f"{k}: {value(v)}\n" for k, v in config.items())


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m r2d2_plugin.tools.make_configs")
    parser.add_argument("--out", default="configs")
    args = parser.parse_args(argv)
    for benchmark, settings in (("classic_cv", FIXMATCH_SETTINGS), ("usb_cv", USB_CV_SETTINGS)):
        os.makedirs(os.path.join(args.out, benchmark), exist_ok=True)
        for dataset, num_labels in settings:
            config = r2d2_config(benchmark, dataset, num_labels)
            batch = config["batch_size"] * (1 + config["uratio"])
            path = os.path.join(args.out, benchmark, f"{config['save_name']}.yaml")
            header = HEADER.format(dataset=dataset, num_labels=num_labels, benchmark=benchmark,
                                   lam=config["r2d2_lambda"], batch=batch, ref_lam=REFERENCE_LAMBDA,
                                   ref_batch=REFERENCE_BATCH)
            with open(path, "w") as f:
                f.write(header + (USB_CV_NOTE if benchmark == "usb_cv" else "") + to_yaml(config))
            print(path)


if __name__ == "__main__":
    main()
