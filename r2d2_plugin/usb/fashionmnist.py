"""``fashionmnist``: Zalando's Fashion-MNIST (70,000 grey 28x28 images of 10 kinds of clothing),
served through USB's ``BasicDataset`` like ``digits`` (weak and strong views, every USB algorithm).

The official split: the 60,000 training images are the training pool and the unlabeled set
(USB's ``include_lb_to_ulb``), the 10,000 test images the eval set. The labeled set
(``num_labels``, class-balanced) is drawn from the pool by ``seed``. With ``eval_split: val`` a
fixed, class-stratified sixth of the pool (1,000 images per class, 10,000 in all, drawn with
``VAL_SEED`` whatever the run's seed) is held out of training and evaluated instead of the test
set.

Images are replicated to RGB (USB's nets and RandAugment take 3 channels) and, when ``img_size``
is not 28 (e.g. 32 for ``wrn_28_2``), resized once on loading (bilinear, antialiased), so the
views' crops and the eval view work at ``img_size``. They are normalized by the training pool's
mean and std.

Files: the four original IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzipped or not), read by
torchvision, from the first folder that has all four: ``<data_dir>/FashionMNIST/raw``
(torchvision's layout), ``<data_dir>``, ``/usr/share/datasets/fashion-mnist`` (Debian's package
``dataset-fashion-mnist``); else torchvision downloads them into ``<data_dir>/FashionMNIST/raw``
where the network allows.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torchvision.datasets import FashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import extract_archive
from torchvision.transforms import functional as TF
from semilearn.datasets.cv_datasets.datasetbase import BasicDataset

from ..errors import ConfigError
from .datasets import (OFFLINE_CLASSES, as_rgb, build_dsets, check_num_classes, per_class_pick,
                       pick_labeled, split_labeled)

NAME = "fashionmnist"
CLASSES = OFFLINE_CLASSES[NAME]
SIZE = 28
# Image and label file of each split, as Zalando and torchvision name them (without .gz).
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
# eval_split: val holds out 1 / VAL_FRACTION of every class of the pool, drawn with VAL_SEED: the
# validation set of results/fashionmnist_val/make_npz.py (1,000 per class, RandomState(12345)),
# whose labeled sets this module's draw also reproduces.
VAL_FRACTION = 6
VAL_SEED = 12345
Split = Tuple[np.ndarray, np.ndarray]


def idx_file(folder: str, name: str) -> Optional[str]:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    for path in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
        if os.path.isfile(path):
            return path
    return None


def find_files(data_dir: str, system_dir: str = SYSTEM_DIR) -> Optional[Dict[str, str]]:
    """The four IDX files (name -> path) from the first folder that has them all, or None."""
    for folder in (os.path.join(data_dir, "FashionMNIST", "raw"), data_dir, system_dir):
        paths = {name: idx_file(folder, name) for pair in FILES.values() for name in pair}
        if all(paths.values()):
            return paths
    return None


def download(data_dir: str) -> Optional[str]:
    """torchvision's download into ``data_dir/FashionMNIST/raw``; the reason when it fails."""
    try:
        FashionMNIST(data_dir, train=True, download=True)
    except (OSError, RuntimeError) as error:  # urllib's URLError is an OSError
        return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return None


def locate(data_dir: str, system_dir: str = SYSTEM_DIR, allow_download: bool = True) -> Dict[str, str]:
    """The IDX files' paths; torchvision's download when no folder has them; else a ConfigError
    naming both ways to get them."""
    paths = find_files(data_dir, system_dir)
    failure = "not tried"
    if paths is None and allow_download:
        failure = download(data_dir)
        paths = find_files(data_dir, system_dir) if failure is None else None
    if paths is None:
        names = ", ".join(name for pair in FILES.values() for name in pair)
        raise ConfigError(
            f"dataset '{NAME}' needs the Fashion-MNIST IDX files ({names}; gzipped or not), found in "
            f"none of {os.path.join(data_dir, 'FashionMNIST', 'raw')}, {data_dir}, {system_dir}; "
            f"torchvision's download: {failure}",
            f"install Debian's package (apt-get install dataset-fashion-mnist, which puts them in "
            f"{system_dir}), or set data_dir to a folder holding the four files (flat, or in "
            f"torchvision's <data_dir>/FashionMNIST/raw layout)")
    return paths


def read_idx(path: str, reader: Callable[[str], torch.Tensor]) -> np.ndarray:
    """One IDX file through torchvision's ``reader`` (a .gz is decompressed to a temporary file)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            plain = extract_archive(path, tmp) if path.endswith(".gz") else path
            return reader(plain).numpy()
        except (AssertionError, TypeError, ValueError, RuntimeError, KeyError, OSError, EOFError) as error:
            raise ConfigError(f"{path} is not a readable IDX file of Fashion-MNIST ({str(error) or 'bad header'})",
                              "replace it with the original file (apt-get install --reinstall "
                              "dataset-fashion-mnist, or Zalando's download)") from error


def read_split(paths: Dict[str, str], split: str) -> Split:
    """uint8 images (N, 28, 28) and int64 labels of ``split`` (train | test)."""
    image_file, label_file = FILES[split]
    images = read_idx(paths[image_file], read_image_file)
    labels = read_idx(paths[label_file], read_label_file)
    if images.shape[1:] != (SIZE, SIZE) or len(images) != len(labels) or labels.max(initial=0) >= CLASSES:
        raise ConfigError(f"{paths[image_file]} holds {images.shape} images and {paths[label_file]} "
                          f"{len(labels)} labels (max {labels.max(initial=0)}); Fashion-MNIST has "
                          f"{SIZE}x{SIZE} images, one label in 0..{CLASSES - 1} each",
                          "use the original IDX files of Fashion-MNIST")
    return images, labels


def load_fashionmnist(data_dir: str, system_dir: str = SYSTEM_DIR,
                      allow_download: bool = True) -> Dict[str, Split]:
    """The official train (60k) and test (10k) splits, as found by ``locate``."""
    paths = locate(data_dir, system_dir, allow_download)
    return {split: read_split(paths, split) for split in FILES}


def split_indices(labels: np.ndarray, num_labels: int, seed: int, eval_split: str
                  ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Indices into the training set: the training pool, its labeled part (drawn by ``seed``),
    and the held-out validation part for ``eval_split: val`` (None for ``test``)."""
    pool = np.arange(len(labels))
    val_idx = None
    if eval_split == "val":
        counts = np.bincount(labels, minlength=CLASSES)
        val_idx = per_class_pick(labels, {c: int(n) // VAL_FRACTION for c, n in enumerate(counts)}, VAL_SEED)
        pool = np.setdiff1d(pool, val_idx)
    return pool, pick_labeled(NAME, labels, pool, num_labels, CLASSES, seed), val_idx


def at_size(gray: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) grey uint8 images at (N, size, size) (bilinear, antialiased, when they differ)."""
    if (size, size) == gray.shape[1:]:
        return gray
    return TF.resize(torch.from_numpy(gray)[:, None], [size, size], antialias=True)[:, 0].numpy()


def grey_stats(gray: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std + 1e-6) in [0, 1] of grey uint8 images replicated to RGB, from
    their histogram (no floating-point copy of the images)."""
    counts = torch.bincount(torch.from_numpy(gray).ravel(), minlength=256).numpy().astype(np.float64)
    values = np.arange(256) / 255.0
    mean = counts @ values / counts.sum()
    std = np.sqrt(counts @ (values - mean) ** 2 / counts.sum()) + 1e-6
    return np.full(3, mean), np.full(3, std)


def get_fashionmnist(args: Any, alg: str, num_labels: int, num_classes: int, include_lb_to_ulb: bool,
                     data_dir: str) -> Dict[str, Optional[BasicDataset]]:
    """USB's dataset dict for Fashion-MNIST (module docstring)."""
    check_num_classes(NAME, num_classes, CLASSES)
    data = load_fashionmnist(data_dir)
    gray, labels = data["train"]
    pool, lb_idx, val_idx = split_indices(labels, num_labels, args.seed, getattr(args, "eval_split", "test"))
    ev_gray, ev_labels = data["test"] if val_idx is None else (gray[val_idx], labels[val_idx])
    size = int(getattr(args, "img_size", SIZE))
    gray, ev_gray = at_size(gray, size), at_size(ev_gray, size)
    (lb_x, lb_y), (ulb_x, ulb_y) = split_labeled(gray, labels, pool, lb_idx, alg, include_lb_to_ulb)
    return build_dsets(alg, num_classes, (as_rgb(lb_x), lb_y), (as_rgb(ulb_x), ulb_y),
                       (as_rgb(ev_gray), ev_labels), args.crop_ratio, grey_stats(gray[pool]))
