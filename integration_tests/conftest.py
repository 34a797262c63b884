"""Shared set-up: short R2-D2 runs on digits through USB's real trainer, on the CPU."""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

import r2d2_plugin  # noqa: F401
from r2d2_plugin.cli.config import get_config
from r2d2_plugin.cli.train import build, seed_everything

ROOT = Path(__file__).resolve().parents[1]
DIGITS_CONFIG = str(ROOT / "configs" / "r2d2_digits_40.yaml")

# 40 iterations, 10 per USB epoch, evaluation + checkpoint every 10:
# warm-up 0-7, D2 8-15, R2 16-31 (repredict every 4), fine-tune 32-39.
SHORT = ["--num_train_iter", "40", "--epoch", "4", "--num_eval_iter", "10", "--num_log_iter", "5",
         "--batch_size", "8", "--uratio", "2", "--ema_m", "0.5"]
R2D2_SHORT = ["--r2d2_lambda", "187.5", "--r2d2_warmup_iter", "8", "--r2d2_d2_iter", "8",
              "--r2d2_r2_iter", "16", "--r2d2_repredict_period", "4", "--r2d2_finetune_iter", "8"]

# The main job, configs/r2d2_digits_40.yaml as it is (1900 iterations: warm-up 600 / D2 600 /
# R2 600, repredict every 150 / fine-tune 100), as options over SHORT (its USB options, which its
# supervised control takes too) and over R2D2_SHORT (its R2-D2 options).
MAIN_JOB = ["--num_train_iter", "1900", "--epoch", "19", "--num_eval_iter", "100", "--num_log_iter", "50",
            "--batch_size", "16", "--uratio", "3", "--ema_m", "0.99"]
MAIN_JOB_R2D2 = ["--r2d2_lambda", "500", "--r2d2_warmup_iter", "600", "--r2d2_d2_iter", "600",
                 "--r2d2_r2_iter", "600", "--r2d2_repredict_period", "150", "--r2d2_finetune_iter", "100"]


def short_argv(save_dir: Path, *extra: str, name: str = "run", r2d2: bool = True) -> List[str]:
    """Launcher arguments for a 40-iteration run on digits (USB options only when not r2d2)."""
    return ["--c", DIGITS_CONFIG, "--save_dir", str(save_dir), "--save_name", name, *SHORT,
            *(R2D2_SHORT if r2d2 else []), *extra]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


LOGGER_IDS = itertools.count()


def build_alg(argv: List[str]):
    """Parse like the launcher, seed, and build the algorithm; also return its log messages.
    (Nothing here may draw from the seeded RNGs: USB's RandAugment uses Python's ``random``.)"""
    args = get_config(argv)
    seed_everything(args.seed)
    logger = logging.getLogger(f"test.{args.save_name}.{next(LOGGER_IDS)}")
    logger.propagate = False
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return build(args, logger), handler.messages


def unlabeled_logits(alg, model=None) -> torch.Tensor:
    """The logits of ``model`` (default: the network) on the unlabeled set (eval mode, eval
    transform), computed here independently of the plugin's RepredictHook."""
    model = alg.model if model is None else model
    ulb, transform = alg.dataset_dict["train_ulb"], alg.dataset_dict["eval"].transform
    x = torch.stack([transform(Image.fromarray(img)) for img in ulb.data])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(x)["logits"]
    model.train(was_training)
    return logits


@dataclass(frozen=True)
class Control:
    """A supervised-only run's top-1: final and best on the eval set, and on the unlabeled set
    (all three from USB's EMA weights, the ones USB evaluates)."""
    final: float
    best: float
    unlabeled: float


CONTROLS: Dict[Tuple[Tuple[str, ...], int], Control] = {}


def supervised_control(save_dir: Path, *options: str) -> Control:
    """The control of a learning test: USB's ``supervised`` algorithm (cross-entropy on the
    labeled batches only) on the digits config with ``options`` (the USB options the method ran
    with: budget, batch, EMA, seed), through ``alg.train()`` at this process's torch thread count.
    Tests asking for the same options and thread count share one run per session."""
    key = (options, torch.get_num_threads())
    if key not in CONTROLS:
        alg, _ = build_alg(short_argv(save_dir, "--algorithm", "supervised", *options,
                                      name="supervised", r2d2=False))
        alg.train()
        labels = torch.as_tensor(np.asarray(alg.dataset_dict["train_ulb"].targets))
        predicted = unlabeled_logits(alg, alg.ema_model).argmax(dim=1)
        CONTROLS[key] = Control(final=alg.log_dict["eval/top-1-acc"], best=alg.best_eval_acc,
                                unlabeled=(predicted == labels).float().mean().item())
    return CONTROLS[key]


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    np.random.seed(0)
