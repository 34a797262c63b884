"""Offline datasets served through USB's own ``BasicDataset``: ``digits`` and ``npz`` (and
``fashionmnist``, in ``fashionmnist.py``, built from the helpers here).

``digits`` is scikit-learn's handwritten digits (1797 images, 8x8, 10 classes), upscaled to
16x16 RGB so that USB's weak and strong (RandAugment) views apply unchanged. A fixed, class-
stratified third is the eval set (like CIFAR's fixed test set, so numbers across seeds are
comparable); the labeled set (``num_labels``, class-balanced) is drawn by ``seed`` from the rest,
and the rest is unlabeled. With ``eval_split: val`` a fixed class-stratified fifth of that rest is
held out of training and evaluated instead, for choosing settings without the eval third.

``npz`` reads the user's file at ``data_dir``: ``images`` (N,H,W) or (N,H,W,C) uint8, ``labels``
(N,) with -1 for unlabeled samples, and optionally ``eval_images`` / ``eval_labels``.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from torchvision import transforms
from semilearn.datasets.augmentation import RandAugment
from semilearn.datasets.cv_datasets.datasetbase import BasicDataset

from ..errors import ConfigError

OFFLINE_DATASETS = ("digits", "fashionmnist", "npz")
# Image datasets that USB 0.3.2's get_dataset knows, with their class counts.
USB_CV_DATASETS = {"cifar10": 10, "cifar100": 100, "svhn": 10, "stl10": 10, "eurosat": 10,
                   "tissuemnist": 8, "semi_aves": 200, "semi_aves_out": 200, "imagenet": 1000,
                   "imagenet127": 127}
# USB datasets whose labeled set USB's split draws class-balanced at lb_imb_ratio 1 (it asserts
# that num_labels is a multiple of the class count).
BALANCED_SPLIT_DATASETS = ("cifar10", "cifar100", "svhn", "stl10", "eurosat", "tissuemnist")
DIGITS_CLASSES = 10
DIGITS_SIZE = 16
DIGITS_EVAL_SEED = 0
# Built-in datasets with fixed class counts, and those with a validation split (eval_split: val).
OFFLINE_CLASSES = {"digits": DIGITS_CLASSES, "fashionmnist": 10}
VAL_SPLIT_DATASETS = ("digits", "fashionmnist")


def digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 RGB images of DIGITS_SIZE x DIGITS_SIZE, and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    scale = DIGITS_SIZE // digits.images.shape[1]
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    gray = gray.repeat(scale, axis=1).repeat(scale, axis=2)
    return np.repeat(gray[..., None], 3, axis=3), digits.target.astype(np.int64)


def per_class_pick(labels: np.ndarray, per_class: Dict[int, int], seed: int) -> np.ndarray:
    """Indices of ``per_class[c]`` samples of every class c, drawn with ``seed``."""
    rng = np.random.RandomState(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:n] for c, n in sorted(per_class.items())]
    return np.sort(np.concatenate(picked))


def make_transforms(size: int, crop_ratio: float, mean: np.ndarray, std: np.ndarray
                    ) -> Tuple[transforms.Compose, transforms.Compose, transforms.Compose]:
    """USB-style weak (crop), strong (crop + RandAugment(3, 5)) and eval transforms."""
    pad = max(1, int(size * (1 - crop_ratio)))
    norm = [transforms.ToTensor(), transforms.Normalize(mean.tolist(), std.tolist())]
    crop = transforms.RandomCrop(size, padding=pad, padding_mode="reflect")
    weak = transforms.Compose([crop, *norm])
    strong = transforms.Compose([crop, RandAugment(3, 5), *norm])
    return weak, strong, transforms.Compose(norm)


def build_dsets(alg: str, num_classes: int, lb: Tuple[np.ndarray, np.ndarray],
                ulb: Tuple[np.ndarray, np.ndarray], ev: Tuple[np.ndarray, np.ndarray],
                crop_ratio: float, stats: Optional[Tuple[np.ndarray, np.ndarray]] = None
                ) -> Dict[str, Optional[BasicDataset]]:
    """USB's dataset dict from labeled / unlabeled / eval arrays of uint8 RGB images, normalized
    by ``stats`` (per-channel mean, std in [0, 1]) or else by the labeled + unlabeled images'."""
    if stats is None:
        train = np.concatenate([lb[0], ulb[0]]).astype(np.float64) / 255.0
        stats = train.mean(axis=(0, 1, 2)), train.std(axis=(0, 1, 2)) + 1e-6
    mean, std = stats
    weak, strong, plain = make_transforms(lb[0].shape[1], crop_ratio, mean, std)
    return {
        "train_lb": BasicDataset(alg, lb[0], lb[1], num_classes, weak, False, strong, False),
        "train_ulb": BasicDataset(alg, ulb[0], ulb[1], num_classes, weak, True, strong, False),
        "eval": BasicDataset(alg, ev[0], ev[1], num_classes, plain, False, None, False),
        "test": None,
    }


def split_labeled(images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray, lb_idx: np.ndarray,
                  alg: str, include_lb_to_ulb: bool
                  ) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """Labeled and unlabeled arrays, following USB's conventions for ``include_lb_to_ulb`` and for
    ``fullysupervised`` (which trains on every training label)."""
    ulb_idx = train_idx if include_lb_to_ulb else np.setdiff1d(train_idx, lb_idx)
    if alg == "fullysupervised":
        lb_idx = train_idx
    return (images[lb_idx], labels[lb_idx]), (images[ulb_idx], labels[ulb_idx])


def pick_labeled(name: str, labels: np.ndarray, train_idx: np.ndarray, num_labels: int,
                 num_classes: int, seed: int) -> np.ndarray:
    """``num_labels`` indices of ``train_idx``, as many of every class, drawn with ``seed``."""
    most = int(np.bincount(labels[train_idx], minlength=num_classes).min())
    if num_labels % num_classes or not 0 < num_labels // num_classes <= most:
        raise ConfigError(f"num_labels={num_labels} cannot be split evenly over the {num_classes} "
                          f"classes of '{name}' with at most {most} training images each",
                          f"use a multiple of {num_classes} between {num_classes} and {most * num_classes}")
    rest = np.full(len(labels), -1)
    rest[train_idx] = labels[train_idx]
    return per_class_pick(rest, {c: num_labels // num_classes for c in range(num_classes)}, seed)


def check_num_classes(name: str, num_classes: int, found: int) -> None:
    """Refuse a ``num_classes`` that is not the dataset's class count, naming the right one."""
    if num_classes != found:
        raise ConfigError(f"num_classes={num_classes} but dataset '{name}' has {found} classes",
                          f"set num_classes: {found}")


def check_img_size(name: str, img_size: int, size: int) -> None:
    """Refuse an ``img_size`` other than the served images' own ``size`` (they are not resized)."""
    if img_size != size:
        raise ConfigError(f"img_size={img_size} but '{name}' serves images of {size}x{size} pixels, "
                          "unresized", f"set img_size: {size}")


def get_digits(args: Any, alg: str, num_labels: int, num_classes: int,
               include_lb_to_ulb: bool) -> Dict[str, Optional[BasicDataset]]:
    images, labels = digits_arrays()
    check_num_classes("digits", num_classes, DIGITS_CLASSES)
    check_img_size("digits", args.img_size, DIGITS_SIZE)
    counts = np.bincount(labels, minlength=DIGITS_CLASSES)
    eval_idx = per_class_pick(labels, {c: n // 3 for c, n in enumerate(counts)}, DIGITS_EVAL_SEED)
    train_idx = np.setdiff1d(np.arange(len(labels)), eval_idx)
    if getattr(args, "eval_split", "test") == "val":
        pool = np.full(len(labels), -1)
        pool[train_idx] = labels[train_idx]
        eval_idx = per_class_pick(pool, {c: n // 5 for c, n in enumerate(np.bincount(labels[train_idx]))},
                                  DIGITS_EVAL_SEED)
        train_idx = np.setdiff1d(train_idx, eval_idx)
    lb_idx = pick_labeled("digits", labels, train_idx, num_labels, num_classes, args.seed)
    lb, ulb = split_labeled(images, labels, train_idx, lb_idx, alg, include_lb_to_ulb)
    return build_dsets(alg, num_classes, lb, ulb, (images[eval_idx], labels[eval_idx]), args.crop_ratio)


def as_rgb(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ConfigError(f"npz images have dtype {images.dtype}", "store images as uint8 (0-255)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ConfigError(f"npz images have shape {images.shape}", "store (N,H,W) or (N,H,W,1|3)")
    return np.repeat(images, 3, axis=3) if images.shape[-1] == 1 else images


def held_out_per_class(labels: np.ndarray) -> Dict[int, int]:
    """How many labeled images of each class an ``npz`` file without eval arrays holds out for
    evaluation: a fifth, rounded down."""
    return {c: int(n) // 5 for c, n in enumerate(np.bincount(labels[labels >= 0])) if n}


def read_npz(data_dir: str) -> Dict[str, np.ndarray]:
    """The arrays of the user's ``npz`` file, checked against the format (docs/datasets.md)."""
    fix = ("save images (uint8, N images), labels (N, -1 = unlabeled) and optionally an "
           "eval_images / eval_labels pair with np.savez")
    if not os.path.isfile(data_dir):
        raise ConfigError(f"dataset 'npz' reads data_dir={data_dir!r}, which is not a file",
                          "set data_dir to the path of your .npz file")
    try:
        with np.load(data_dir, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, AttributeError, TypeError) as err:
        raise ConfigError(f"{data_dir} is not a .npz file of arrays ({type(err).__name__})", fix) from err
    for key in ("images", "labels"):
        if key not in arrays:
            raise ConfigError(f"{data_dir} has no array '{key}'", fix)
    if ("eval_images" in arrays) != ("eval_labels" in arrays):
        raise ConfigError(f"{data_dir} has only one of eval_images and eval_labels",
                          "save both (a held-out eval set) or neither (a fifth of the labeled "
                          "images is held out)")
    pairs = [("images", "labels")] + ([("eval_images", "eval_labels")] if "eval_images" in arrays else [])
    for images, labels in pairs:
        shape, count = arrays[labels].shape, len(arrays[images])
        if shape != (count,) or arrays[images].ndim not in (3, 4):
            raise ConfigError(f"{data_dir}: {images} has shape {arrays[images].shape} and {labels} "
                              f"{shape}; they need (N, H, W) or (N, H, W, 3) and (N,)", fix)
    if (arrays["labels"] < 0).all() or ("eval_labels" in arrays and (arrays["eval_labels"] < 0).any()):
        raise ConfigError(f"{data_dir} has no labeled image, or an eval label below 0",
                          "label some training images (>= 0) and every eval image")
    return arrays


def npz_num_labels(data_dir: str) -> int:
    """The labeled images an ``npz`` file leaves for training (``get_npz``'s ``num_labels``)."""
    arrays = read_npz(data_dir)
    labels = arrays["labels"]
    held = 0 if "eval_images" in arrays else sum(held_out_per_class(labels).values())
    return int((labels >= 0).sum()) - held


def get_npz(args: Any, alg: str, num_classes: int, include_lb_to_ulb: bool,
            data_dir: str) -> Dict[str, Optional[BasicDataset]]:
    arrays = read_npz(data_dir)
    images, labels = as_rgb(arrays["images"]), arrays["labels"].astype(np.int64)
    labeled = np.flatnonzero(labels >= 0)
    if "eval_images" in arrays:
        ev = (as_rgb(arrays["eval_images"]), arrays["eval_labels"].astype(np.int64))
    else:
        held = per_class_pick(labels, held_out_per_class(labels), args.seed)
        if not len(held):
            raise ConfigError(f"{data_dir} has no eval_images and fewer than 5 labeled images in "
                              f"every class, so a fifth of them holds out nothing to evaluate on",
                              "save a held-out eval_images / eval_labels pair in the .npz")
        ev = (images[held], labels[held])
        keep = np.setdiff1d(np.arange(len(labels)), held)
        images, labels = images[keep], labels[keep]
        labeled = np.flatnonzero(labels >= 0)
    found = int(max(labels.max(), ev[1].max())) + 1
    check_num_classes(data_dir, num_classes, found)
    sizes = {images.shape[1:3], ev[0].shape[1:3]}
    if len(sizes) > 1 or images.shape[1] != images.shape[2]:
        raise ConfigError(f"{data_dir} holds images of {' and '.join(map(str, sorted(sizes)))} pixels",
                          "save square images of one size for training and eval (npz does not resize)")
    check_img_size(data_dir, args.img_size, images.shape[1])
    args.num_labels = len(labeled)
    lb, ulb = split_labeled(images, labels, np.arange(len(labels)), labeled, alg, include_lb_to_ulb)
    return build_dsets(alg, num_classes, lb, ulb, ev, args.crop_ratio)


def unknown_dataset(name: str) -> ConfigError:
    known = ", ".join([*OFFLINE_DATASETS, *USB_CV_DATASETS])
    return ConfigError(f"unknown dataset '{name}'",
                       f"set dataset to one of {known} (or a USB nlp/audio dataset), or use 'npz' "
                       f"with data_dir pointing at your own .npz file")


def check_labeled_per_class(dataset: str, targets: Any, num_labels: int, num_classes: int) -> None:
    """Refuse a labeled set short of ``num_labels / num_classes`` images in a class: USB's balanced
    split then labels that whole class without a word (and leaves none of it unlabeled)."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)
    wanted = num_labels // num_classes
    short = int(np.argmin(counts))
    if counts[short] < wanted:
        raise ConfigError(f"num_labels={num_labels} asks for {wanted} labeled images of every class, "
                          f"but class {short} of '{dataset}' has only {counts[short]} training images",
                          f"use num_labels of at most {counts[short] * num_classes}")


def with_offline_datasets(usb_get_dataset: Callable) -> Callable:
    """Wrap USB's ``get_dataset`` so it also serves ``digits``, ``fashionmnist`` and ``npz``, and
    refuses a name it does not know (USB returns None) with a ``ConfigError``."""
    from .fashionmnist import get_fashionmnist

    def get_dataset(args: Any, algorithm: str, dataset: str, num_labels: int, num_classes: int,
                    data_dir: str = "./data", include_lb_to_ulb: bool = True) -> Dict[str, Any]:
        if dataset == "digits":
            return get_digits(args, algorithm, num_labels, num_classes, include_lb_to_ulb)
        if dataset == "fashionmnist":
            return get_fashionmnist(args, algorithm, num_labels, num_classes, include_lb_to_ulb, data_dir)
        if dataset == "npz":
            return get_npz(args, algorithm, num_classes, include_lb_to_ulb, data_dir)
        try:
            dataset_dict = usb_get_dataset(args, algorithm, dataset, num_labels, num_classes, data_dir,
                                           include_lb_to_ulb)
        except IndexError as err:
            if dataset not in BALANCED_SPLIT_DATASETS:
                raise
            # USB's split: every image of every class labeled leaves an empty float index array.
            raise ConfigError(f"num_labels={num_labels} asks for {num_labels // num_classes} labeled "
                              f"images of every class of '{dataset}', all that every class has or "
                              f"more, so USB's split leaves no image unlabeled ({err})",
                              "use fewer labels than the training images of a class (CIFAR-10: "
                              "5,000, CIFAR-100: 500, STL-10's labeled ones: 500)") from err
        except OSError as err:  # torchvision's download (URLError) or the files themselves
            raise ConfigError(f"dataset '{dataset}' could not be read from data_dir={data_dir!r} nor "
                              f"downloaded ({type(err).__name__}: {err})",
                              "put USB's files for it under data_dir (the table in docs/datasets.md) "
                              "or run where torchvision can download them") from err
        if dataset_dict is None:
            raise unknown_dataset(dataset)
        if dataset in BALANCED_SPLIT_DATASETS and args.lb_imb_ratio == 1:
            check_labeled_per_class(dataset, dataset_dict["train_lb"].targets, num_labels, num_classes)
        return dataset_dict

    get_dataset.__wrapped_usb__ = usb_get_dataset
    return get_dataset
