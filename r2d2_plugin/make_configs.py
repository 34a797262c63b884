"""Write R2-D2 configs for USB's classic_cv settings from USB's FixMatch settings.

    python -m r2d2_plugin.make_configs --out configs/classic_cv

``FIXMATCH_COMMON`` and ``FIXMATCH_SETTINGS`` are the values of USB's
``config/classic_cv/fixmatch/fixmatch_<dataset>_<labels>_0.yaml`` (that folder is in USB's GitHub
repository, not in the wheel). The generated configs keep every one of them except the
FixMatch-only options (``hard_label``, ``T``, ``p_cutoff``), the names, and the launcher settings
in ``SINGLE_PROCESS``; they add the R2-D2 options.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Sequence

FIXMATCH_COMMON: Dict[str, Any] = {
    "overwrite": True, "use_tensorboard": True, "use_wandb": False, "epoch": 1024,
    "num_train_iter": 1048576, "num_eval_iter": 5120, "num_log_iter": 256, "batch_size": 64,
    "eval_batch_size": 256, "ulb_loss_ratio": 1.0, "uratio": 7, "ema_m": 0.999,
    "crop_ratio": 0.875, "img_size": 32, "optim": "SGD", "lr": 0.03, "momentum": 0.9,
    "weight_decay": 0.0005, "layer_decay": 1.0, "amp": False, "clip": 0.0, "use_cat": True,
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
# USB's configs launch one process per GPU through torch.multiprocessing; this launcher runs one
# process (CPU or one GPU), and refuses `resume: True` without an existing checkpoint.
SINGLE_PROCESS = {"multiprocessing_distributed": False, "gpu": 0, "resume": False, "load_path": None}
R2D2_OPTIONS: Dict[str, Any] = {
    "r2d2_alpha": 0.1, "r2d2_beta": 0.03, "r2d2_labeled_logit": 10.0,
    "r2d2_lr_d2": 0.12, "r2d2_lr_r2": [0.12, 0.08, 0.04, 0.004], "r2d2_lr_finetune": 0.01,
}


def r2d2_config(dataset: str, num_labels: int) -> Dict[str, Any]:
    name = f"r2d2_{dataset}_{num_labels}_0"
    config = {"algorithm": "r2d2", "save_dir": "./saved_models/classic_cv", "save_name": name,
              **FIXMATCH_COMMON, **FIXMATCH_SETTINGS[(dataset, num_labels)],
              "num_labels": num_labels, "dataset": dataset, **SINGLE_PROCESS, **R2D2_OPTIONS}
    batch = config["batch_size"] * (1 + config["uratio"])
    config["r2d2_lambda"] = 4000.0 * batch / 512
    return config


HEADER = """# R2-D2 on {dataset}, {num_labels} labels: USB's FixMatch setting with the algorithm part
# replaced (made by `python -m r2d2_plugin.make_configs`; do not edit by hand).
# Stages: r2d2_*_iter unset = num_train_iter split 300:300:300:50 as in the reference
# (warm-up / D2 / R2 with 4 repredictions / fine-tune); lr = the stage-1 (warm-up) lr.
# r2d2_lambda = 4000 * batch_size * (1 + uratio) / 512 = {lam:g}: the reference's per-sample store
# step (lambda * alpha / B = 4000 * 0.1 / 512) at USB's batch B = {batch}.
"""


def to_yaml(config: Dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if v is None:
            return "None"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    return "".join(f"{k}: {value(v)}\n" for k, v in config.items())


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m r2d2_plugin.make_configs")
    parser.add_argument("--out", default="configs/classic_cv")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for dataset, num_labels in FIXMATCH_SETTINGS:
        config = r2d2_config(dataset, num_labels)
        batch = config["batch_size"] * (1 + config["uratio"])
        path = os.path.join(args.out, f"{config['save_name']}.yaml")
        with open(path, "w") as f:
            f.write(HEADER.format(dataset=dataset, num_labels=num_labels, lam=config["r2d2_lambda"],
                                  batch=batch) + to_yaml(config))
        print(path)


if __name__ == "__main__":
    main()
