"""Launcher, the counterpart of USB's ``train.py`` (which the wheel lacks):

    python -m r2d2_plugin.cli.train --c CONFIG.yaml [--option value ...]

Runs ``r2d2`` or any USB algorithm from a USB-format YAML on the CPU or one GPU, seeded, with
USB's save_dir / save_name / resume / load_path semantics; under ``torchrun --nproc_per_node=N``,
on N GPUs (NCCL) or N CPU processes (gloo) through USB's DDP path (``distributed``).
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import sys
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

import r2d2_plugin  # noqa: F401  (registers r2d2 and applies the USB patches)
import semilearn.nets as usb_nets
from semilearn.algorithms import get_algorithm
from semilearn.core.utils import TBLog, count_parameters, get_net_builder

from . import distributed
from .config import get_config
from ..errors import ConfigError
from .hooks import CurveHook, ProgressHook, final_top1
from .wandb_logging import LeaderboardWandbHook


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's RNGs, as USB's ``train.py`` does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True


def make_logger(name: str) -> logging.Logger:
    """A logger printing to the console (the launcher adds the run's ``log.txt``)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s"))
        logger.addHandler(handler)
    return logger


def log_to_file(logger: logging.Logger, save_path: str) -> None:
    """Log to ``save_path/log.txt`` (only: a file handler of an earlier run is removed)."""
    for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        logger.removeHandler(handler)
        handler.close()
    os.makedirs(save_path, exist_ok=True)
    handler = logging.FileHandler(os.path.join(save_path, "log.txt"))
    handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s"))
    logger.addHandler(handler)


def build(args: Any, logger: logging.Logger) -> Any:
    """The algorithm, placed as USB's ``train.py`` places it: ``send_model_cuda`` when there is a
    GPU (DDP with SyncBatchNorm under torchrun), DDP over gloo under torchrun on the CPU; with
    ``use_wandb`` it logs through ``LeaderboardWandbHook`` instead of USB's ``WANDBHook``
    (on rank 0 only)."""
    if not args.net_from_name and not hasattr(usb_nets, args.net):
        raise ConfigError(f"unknown net '{args.net}'", "use a semilearn.nets name (e.g. wrn_28_2) "
                          "or digits_cnn, or set net_from_name: True for a torchvision model")
    distributed.join(args)
    net_builder = get_net_builder(args.net, args.net_from_name)
    use_wandb, args.use_wandb = args.use_wandb, False
    alg = get_algorithm(args, net_builder, None, logger)
    args.use_wandb = use_wandb
    if use_wandb and distributed.is_main(args):
        alg.register_hook(LeaderboardWandbHook(), "WANDBHook", "LOWEST")
    alg.model = distributed.wrap_model(args, alg.model)
    alg.ema_model = distributed.wrap_model(args, alg.ema_model, clip_batch=False)
    if args.distributed:
        # USB's hooks save and log where rank % ngpus_per_node == 0, ngpus_per_node being
        # torch.cuda.device_count() (0 on the CPU): count the processes of this node instead.
        alg.ngpus_per_node = distributed.local_world()
    return alg


def resume_from(alg: Any, load_path: str) -> None:
    """USB's ``load_model``, with a checkpoint that does not fit the algorithm or net (USB raises
    KeyError or load_state_dict's RuntimeError) reported as a ``ConfigError``."""
    try:
        alg.load_model(load_path)
    except (KeyError, RuntimeError) as err:
        detail = (str(err).splitlines() or [""])[0]
        raise ConfigError(f"the checkpoint {load_path} does not fit this run ({type(err).__name__}: "
                          f"{detail}): another algorithm's or net's, or not written by USB",
                          f"resume with the algorithm and net of the run that wrote it (now "
                          f"{alg.args.algorithm}, {alg.args.net}), or start a new run with resume: False") from err


def prepare(args: Any) -> Any:
    """Seed, build, (resume,) and hook the algorithm; only rank 0 touches the run's folder."""
    seed_everything(args.seed)
    save_path = os.path.join(args.save_dir, args.save_name)
    main = distributed.is_main(args)
    logger = make_logger(f"r2d2_plugin.{args.save_name}")
    logger.setLevel(logging.INFO if main else logging.WARNING)
    alg = build(args, logger)
    if main and os.path.exists(save_path) and not args.resume:
        if not args.overwrite:
            raise ConfigError(f"{save_path} already exists", "set overwrite: True, resume: True, "
                              "or another save_name")
        shutil.rmtree(save_path)
    if args.distributed:
        torch.distributed.barrier()
    if args.resume:
        # before log.txt is opened: an unreadable checkpoint stops the run with the folder as it was
        resume_from(alg, args.load_path)
    if main:
        log_to_file(logger, save_path)
        alg.tb_log = TBLog(save_path, "tensorboard", use_tensorboard=args.use_tensorboard)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    processes = f", {args.world_size} processes" if args.distributed else ""
    logger.info(f"{args.algorithm} on {args.dataset} ({device}{processes}), "
                f"{count_parameters(alg.model)} trainable parameters")
    if args.resume:
        logger.info(f"resumed from {args.load_path} at iteration {alg.it}")
        if alg.it >= args.num_train_iter:
            logger.info(f"its run had finished (num_train_iter={args.num_train_iter}): nothing is "
                        "trained, the weights are evaluated as they are")
    if main:
        alg.register_hook(ProgressHook(), "ProgressHook", "LOWEST")
        alg.register_hook(CurveHook(), "CurveHook", "LOWEST")
    return alg


def fit(args: Any, alg: Any) -> Dict[str, Any]:
    """Train; return USB's results dict plus the final top-1, the number of labels (as the
    dataset set it) and the iteration budget."""
    alg.train()
    results = dict(alg.results_dict, num_labels=args.num_labels, num_train_iter=args.num_train_iter)
    results["eval/final_acc"] = final_top1(alg)
    if distributed.is_main(args):
        print(f"[{args.algorithm}] final top-1 {results['eval/final_acc']:.4f}  "
              f"best top-1 {results['eval/best_acc']:.4f} (iteration {results['eval/best_it'] + 1})",
              flush=True)
    return results


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Parse, prepare, train (``fit``); under torchrun, leave the process group at the end."""
    args = get_config(argv)
    try:
        return fit(args, prepare(args))
    finally:
        if args.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main() -> None:
    try:
        run(sys.argv[1:])
    except ConfigError as err:
        sys.exit(f"error: {err}")
    except BaseException as err:  # Ctrl-C inside torch.save surfaces as its RuntimeError
        if not interrupted(err):
            raise
        resume_hint()


def interrupted(err: BaseException) -> bool:
    """Whether ``err`` is, or was raised while handling, a KeyboardInterrupt."""
    while err is not None:
        if isinstance(err, KeyboardInterrupt):
            return True
        err = err.__context__
    return False


def resume_hint() -> None:
    """Exit after Ctrl-C with the command that resumes the run from its last checkpoint."""
    args = get_config(sys.argv[1:])
    latest = os.path.join(args.save_dir, args.save_name, "latest_model.pth")
    if not os.path.isfile(latest):
        sys.exit("interrupted before the first checkpoint: start the run again")
    sys.exit(f"interrupted: {latest} holds the last checkpoint; continue with: python -m "
             f"r2d2_plugin.cli.train {' '.join(sys.argv[1:])} --resume True --load_path {latest}")


if __name__ == "__main__":
    main()
