"""Multi-process training under ``torchrun`` with USB's DDP path.

``torchrun --nproc_per_node=N -m r2d2_plugin.cli.train --c CONFIG.yaml`` starts N copies of the
launcher; each reads its rank from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``) and joins one process group:
NCCL (the config's ``dist_backend``) with one GPU per process, gloo on the CPU.

As in USB's ``train.py``, ``batch_size`` is per process (USB builds its loaders before
``send_model_cuda`` divides it), so the global batch is ``batch_size x N``, and USB's
``DistributedSampler`` hands rank r the r-th of every N samples of the permutation a single process
would take in order: N processes at ``batch_size`` B see, step by step, the samples that one
process at ``batch_size`` N·B sees. On GPUs the nets get USB's SyncBatchNorm; PyTorch's
SyncBatchNorm is GPU-only, so on the CPU BatchNorm normalizes each process's own batch and its
running statistics are rank 0's (DDP's ``broadcast_buffers``).
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from semilearn.core.utils import send_model_cuda
from torch import nn

from ..errors import ConfigError


def torchrun_world() -> int:
    """Processes torchrun started (1 when the launcher runs on its own)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve(args: Any) -> None:
    """Fill USB's distributed options (``distributed``, ``world_size``, ``rank``, ``gpu``) from
    torchrun's environment. Without torchrun (or with one process) the run is not distributed;
    a config asking for USB's own ``mp.spawn`` launch (``multiprocessing_distributed: True`` or
    ``world_size > 1``) is refused with the torchrun command to use instead."""
    world = torchrun_world()
    if world == 1:
        if args.multiprocessing_distributed or args.world_size > 1:
            raise ConfigError(
                f"the config asks for USB's multi-process launch (multiprocessing_distributed: "
                f"{args.multiprocessing_distributed}, world_size: {args.world_size}), which this "
                "launcher does not spawn itself",
                "start it with torchrun --nproc_per_node=N -m r2d2_plugin.cli.train --c CONFIG.yaml "
                "(one process per GPU, or N CPU processes), or set multiprocessing_distributed: "
                "False and world_size: 1 for one process")
        args.distributed, args.world_size, args.rank = False, 1, 0
        return
    # multiprocessing_distributed as under USB's own launch: USB's EvaluationHook then saves the
    # final checkpoint on rank 0 only.
    args.distributed, args.multiprocessing_distributed = True, True
    args.world_size, args.rank = world, int(os.environ["RANK"])
    args.gpu = int(os.environ["LOCAL_RANK"]) if torch.cuda.is_available() else None


def join(args: Any) -> None:
    """Join torchrun's process group (once): the config's ``dist_backend`` (NCCL) on GPUs, each
    process on GPU ``LOCAL_RANK``; gloo on the CPU."""
    if not args.distributed or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(args.gpu)
        dist.init_process_group(backend=args.dist_backend, init_method="env://")
    else:
        dist.init_process_group(backend="gloo", init_method="env://")


def local_world() -> int:
    """Processes on this node (torchrun's ``LOCAL_WORLD_SIZE``)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(torchrun_world())))


def is_main(args: Any) -> bool:
    """The process that writes files and prints progress: rank 0 (or the only one)."""
    return not args.distributed or args.rank == 0


def wrap_model(args: Any, model: nn.Module, clip_batch: bool = True) -> nn.Module:
    """The model placed as USB places it: ``send_model_cuda`` when there is CUDA (DDP with
    SyncBatchNorm when distributed); on the CPU, DDP over gloo when distributed, else unchanged."""
    if torch.cuda.is_available():
        return send_model_cuda(args, model, clip_batch=clip_batch)
    if args.distributed:
        # Without SyncBatchNorm the BatchNorm running statistics would drift apart between
        # processes (and so would evaluation): DDP broadcasts rank 0's at every forward instead.
        return nn.parallel.DistributedDataParallel(model, broadcast_buffers=True,
                                                   find_unused_parameters=True)
    return model
