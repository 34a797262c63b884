"""Every change the plugin makes to USB (semilearn 0.3.2), applied once at import.

USB is CUDA-only in a few places. On a machine with CUDA none of those functions is replaced
(only the crash-safe checkpoints and the dataset and net additions below apply). On a machine
without CUDA, the functions listed in ``CUDA_ONLY`` run with CPU stand-ins for the CUDA calls
they make:

- ``AlgorithmBase.process_batch`` and ``AlgorithmBase.evaluate`` call ``Tensor.cuda(self.gpu)``
  to move batches: on CPU the tensor stays where it is (the model is on the CPU too).
- ``TimerHook.before_run`` creates ``torch.cuda.Event`` timers: on CPU, wall-clock events.
- ``ParamUpdateHook.before_train_step`` / ``after_train_step`` call ``torch.cuda.synchronize``
  around those timers: on CPU, nothing to wait for.
- ``FlexMatch.load_model`` and ``FreeMatch.load_model`` move their thresholding state with
  ``Tensor.cuda``: on CPU it stays on the CPU, so these baselines resume too.

``send_model_cuda`` (which refuses CPU) is not patched: the launcher calls it only when CUDA is
there. ``lighting.Trainer`` (``torch.cuda.set_device``) is not used.

With or without CUDA, checkpoints are made crash-safe:

- ``AlgorithmBase.save_model`` (every algorithm's ``latest_model.pth`` / ``model_best.pth``) runs
  with ``torch.save`` writing to a temporary file in the checkpoint's folder, flushed and fsynced,
  then renamed over the checkpoint (``os.replace``): a process killed during a save leaves the
  previous checkpoint whole (and a stray ``.<name>.<pid>.tmp`` file).
- ``AlgorithmBase.load_model`` runs with ``torch.load`` turning an unreadable file (truncated,
  corrupted) into a ``ConfigError`` that names the file and the fix; nothing is deleted or
  rewritten.

Additions, not changes:

- ``semilearn.core.algorithmbase.get_dataset`` (the name ``AlgorithmBase.set_dataset`` calls) learns
  the offline datasets ``digits``, ``fashionmnist`` and ``npz`` and hands every other name to USB's own function.
- R2-D2 sets ``BasicDataset.alg`` of its unlabeled set (the algorithm name by which USB's dataset
  picks the views it serves) to a weak-view-only name, per dataset object, not patched here.
- ``semilearn.nets`` gains the net builders ``digits_cnn`` and ``resnet18`` (USB's ImageNet ResNet
  with basic blocks; USB ships only ``resnet50``) so ``get_net_builder`` finds them.
"""
from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Any, Callable, Iterator

import torch
import semilearn.core.algorithmbase as algorithmbase
import semilearn.nets
from semilearn.core import AlgorithmBase
from semilearn.algorithms.flexmatch import FlexMatch
from semilearn.algorithms.freematch import FreeMatch
from semilearn.core.hooks import ParamUpdateHook, TimerHook

from . import datasets, nets
from ..errors import ConfigError

_APPLIED = False


class WallClockEvent:
    """CPU stand-in for ``torch.cuda.Event(enable_timing=True)``."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.t = time.perf_counter()

    def record(self, *args: Any) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: "WallClockEvent") -> float:
        """Milliseconds from this event to ``end``, as CUDA events report."""
        return (end.t - self.t) * 1000.0


def _tensor_stays(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return self


@contextlib.contextmanager
def cpu_stand_ins() -> Iterator[None]:
    """Swap ``Tensor.cuda``, ``torch.cuda.Event`` and ``torch.cuda.synchronize`` for CPU
    stand-ins while a USB function from ``CUDA_ONLY`` runs."""
    saved = (torch.Tensor.cuda, torch.cuda.Event, torch.cuda.synchronize)
    torch.Tensor.cuda = _tensor_stays
    torch.cuda.Event = WallClockEvent
    torch.cuda.synchronize = lambda *a, **k: None
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.cuda.Event, torch.cuda.synchronize = saved


def run_inside(context: Callable[[], Any], fn: Callable) -> Callable:
    """``fn`` run inside ``context()`` (``cpu_stand_ins`` or ``crash_safe_checkpoints``); the USB
    original stays on ``__wrapped_usb__``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with context():
            return fn(*args, **kwargs)

    wrapper.__wrapped_usb__ = fn
    return wrapper


def atomic_save(obj: Any, path: Any, *args: Any, **kwargs: Any) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder, flushed, fsynced and
    renamed over ``path``; a file object instead of a path is written as ``torch.save`` does."""
    if not isinstance(path, (str, os.PathLike)):
        USB_TORCH_SAVE(obj, path, *args, **kwargs)
        return
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            USB_TORCH_SAVE(obj, f, *args, **kwargs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def checked_load(path: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.load``, with a file that cannot be read as a checkpoint reported as a
    ``ConfigError`` naming it (the file is left as it is)."""
    try:
        return USB_TORCH_LOAD(path, *args, **kwargs)
    except Exception as err:
        if not isinstance(path, (str, os.PathLike)):
            raise
        folder, name = os.path.split(os.path.abspath(path))
        other = os.path.join(folder, "latest_model.pth" if name == "model_best.pth" else "model_best.pth")
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        raise ConfigError(f"the checkpoint {path} cannot be read ({type(err).__name__}: {detail}); "
                          "it is truncated, corrupted or not a checkpoint",
                          f"resume from another checkpoint (load_path: {other} or an earlier copy), "
                          f"or start over with resume: False; {path} was left as it is") from err


@contextlib.contextmanager
def crash_safe_checkpoints() -> Iterator[None]:
    """Swap ``torch.save`` / ``torch.load`` for ``atomic_save`` / ``checked_load`` while USB's
    ``save_model`` / ``load_model`` runs."""
    saved = (torch.save, torch.load)
    torch.save, torch.load = atomic_save, checked_load
    try:
        yield
    finally:
        torch.save, torch.load = saved


USB_TORCH_SAVE, USB_TORCH_LOAD = torch.save, torch.load
CHECKPOINTING = [(AlgorithmBase, "save_model"), (AlgorithmBase, "load_model")]

CUDA_ONLY = [
    (AlgorithmBase, "process_batch"),
    (AlgorithmBase, "evaluate"),
    (TimerHook, "before_run"),
    (ParamUpdateHook, "before_train_step"),
    (ParamUpdateHook, "after_train_step"),
    (FlexMatch, "load_model"),
    (FreeMatch, "load_model"),
]


def apply() -> None:
    """Apply the patches and additions above; calling it again does nothing."""
    global _APPLIED
    if _APPLIED:
        return
    if not torch.cuda.is_available():
        for owner, name in CUDA_ONLY:
            setattr(owner, name, run_inside(cpu_stand_ins, getattr(owner, name)))
    for owner, name in CHECKPOINTING:
        setattr(owner, name, run_inside(crash_safe_checkpoints, getattr(owner, name)))
    algorithmbase.get_dataset = datasets.with_offline_datasets(algorithmbase.get_dataset)
    semilearn.nets.digits_cnn = nets.digits_cnn
    semilearn.nets.resnet18 = nets.resnet18
    _APPLIED = True
