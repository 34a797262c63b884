"""USB's own CIFAR-10/100, SVHN and STL-10 loaders (``semilearn.datasets.cv_datasets``, reached
through the launcher's ``get_config`` + ``build``) under every shipped classic_cv config, from
small files written here in the datasets' real on-disk formats, then a few iterations of
``alg.train()`` with ``digits_cnn``; and every net the shipped configs name, built through USB's
``get_net_builder``, one forward pass.

The files are not the real ones, so torchvision's md5 check is bypassed (and nothing else): each
file is still found and read by torchvision's own dataset class, called by USB's loader.
"""
from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets.cifar
import torchvision.datasets.stl10
import torchvision.datasets.svhn
import torchvision.datasets.utils
import semilearn.datasets.utils as usb_data_utils
from semilearn.core.utils import get_net_builder

from r2d2_plugin.cli.config import read_yaml
from r2d2_plugin.errors import ConfigError
from conftest import ROOT, build_alg

CLASSIC_CV = sorted((ROOT / "configs" / "classic_cv").glob("*.yaml"))
ALL_CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
# Not a seed the configs use: USB's split helper keeps its drawn indices in its install folder,
# named by dataset, num_labels and seed, and its STL-10 loader reuses them when they exist.
SEED = 8191
# Per class: training images beyond the labeled ones; STL-10 unlabeled images; test images.
EXTRA, UNLABELED, TEST = 1, 2, 1
# digits_cnn, batch 4 + 4, 3 iterations: warm-up 1, D2 1, R2 0, fine-tune 1 (two repredictions,
# each over the whole unlabeled set); evaluated at the end. Everything else from the config.
NUM_TRAIN_ITER = 3
SHORT_RUN = ["--seed", str(SEED), "--net", "digits_cnn", "--num_train_iter", str(NUM_TRAIN_ITER),
             "--epoch", "1", "--num_eval_iter", str(NUM_TRAIN_ITER), "--num_log_iter", "1",
             "--batch_size", "4", "--uratio", "1", "--eval_batch_size", "64", "--num_workers", "0",
             "--r2d2_warmup_iter", "1", "--r2d2_d2_iter", "1", "--r2d2_r2_iter", "0",
             "--r2d2_finetune_iter", "1"]


def fewest_labels(configs: List[Path]) -> List[Path]:
    """Per dataset, the config with the fewest labels."""
    fewest: Dict[str, Tuple[int, Path]] = {}
    for config in configs:
        yaml = read_yaml(str(config))
        fewest[yaml["dataset"]] = min(fewest.get(yaml["dataset"], (math.inf, config)),
                                      (yaml["num_labels"], config))
    return [config for _, config in fewest.values()]


# Training runs the same path whatever num_labels is; it repredicts the whole unlabeled set, so it
# runs on the config with the fewest labels of each dataset (every config's datasets are checked).
TRAINED = fewest_labels(CLASSIC_CV)


class Written:
    """Every image written, indexed by a serial number stamped into its pixel (0, 0) (G, B: high
    and low byte; R: the label, 255 when unlabeled), with its label (-1: unlabeled) and the
    serials of each split."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.rng = size, np.random.RandomState(seed)
        self.parts: List[np.ndarray] = []
        self.labels = np.empty(0, dtype=np.int64)
        self.splits: Dict[str, np.ndarray] = {}

    def add(self, split: str, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Random (N, size, size, 3) uint8 images for ``labels``, in a shuffled class order."""
        labels = self.rng.permutation(labels).astype(np.int64)
        images = self.rng.randint(0, 256, (len(labels), self.size, self.size, 3), dtype=np.uint8)
        serial = np.arange(len(self.labels), len(self.labels) + len(labels))
        stamp = [np.where(labels >= 0, labels, 255), serial // 256, serial % 256]
        images[:, 0, 0] = np.stack(stamp, 1)
        self.parts.append(images)
        self.labels = np.concatenate([self.labels, labels])
        self.splits[split] = serial
        return images, labels

    def serials(self, data: np.ndarray) -> np.ndarray:
        """Which written images ``data`` (N, H, W, 3) holds, checking that each is that image."""
        data = np.asarray(data)
        serial = data[:, 0, 0, 1].astype(np.int64) * 256 + data[:, 0, 0, 2]
        assert serial.max() < len(self.labels)
        written = np.concatenate(self.parts)[serial]
        assert np.array_equal(data, written), "an image differs from the one written"
        return serial


def dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """CIFAR's row layout: 1024 red, 1024 green, 1024 blue values per image, each row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar10(root: Path, w: Written, per_class: Union[int, np.ndarray]) -> None:
    """``per_class``: the labeled images of every class (or of each, an array); EXTRA more each."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    x, y = w.add("train", np.repeat(np.arange(10), per_class + EXTRA))
    for k, part in enumerate(np.array_split(np.arange(len(y)), 5), 1):
        dump(folder / f"data_batch_{k}", {"batch_label": f"training batch {k} of 5",
                                          "labels": y[part].tolist(), "data": cifar_rows(x[part]),
                                          "filenames": [f"img_{i}.png" for i in part]})
    x, y = w.add("test", np.repeat(np.arange(10), TEST))
    dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": y.tolist(),
                                 "data": cifar_rows(x),
                                 "filenames": [f"t_{i}.png" for i in range(len(y))]})
    dump(folder / "batches.meta", {"num_cases_per_batch": len(y), "num_vis": 3072,
                                   "label_names": [f"class_{c}" for c in range(10)]})


def write_cifar100(root: Path, w: Written, per_class: int) -> None:
    folder = root / "cifar100" / "cifar-100-python"
    for split, n in (("train", per_class + EXTRA), ("test", TEST)):
        x, y = w.add(split, np.repeat(np.arange(100), n))
        dump(folder / split, {"filenames": [f"{split}_{i}.png" for i in range(len(y))],
                              "batch_label": f"{split}ing batch 1 of 1", "fine_labels": y.tolist(),
                              "coarse_labels": (y // 5).tolist(), "data": cifar_rows(x)})
    dump(folder / "meta", {"fine_label_names": [f"fine_{c}" for c in range(100)],
                           "coarse_label_names": [f"coarse_{c}" for c in range(20)]})


def write_svhn(root: Path, w: Written, per_class: int) -> None:
    """``{split}_32x32.mat``: X (32, 32, 3, N) uint8, y (N, 1) with label 10 for the digit 0."""
    (root / "svhn").mkdir(parents=True)
    for split, n in (("train", per_class + EXTRA), ("extra", EXTRA), ("test", TEST)):
        x, y = w.add(split, np.repeat(np.arange(10), n))
        scipy.io.savemat(root / "svhn" / f"{split}_32x32.mat",
                         {"X": x.transpose(1, 2, 3, 0),
                          "y": np.where(y == 0, 10, y)[:, None].astype(np.uint8)})


def write_stl10(root: Path, w: Written, per_class: int) -> None:
    """``stl10_binary``: *_X.bin uint8 (N, 3, 96, 96) column-major images, *_y.bin labels 1..10."""
    folder = root / "stl10" / "stl10_binary"
    folder.mkdir(parents=True)
    for split, labels in (("train", np.repeat(np.arange(10), per_class + EXTRA)),
                          ("unlabeled", np.full(10 * UNLABELED, -1)),
                          ("test", np.repeat(np.arange(10), TEST))):
        x, y = w.add(split, labels)
        x.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")
        if split != "unlabeled":
            (y + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    folds = [" ".join(map(str, range(k, len(w.splits["train"]), 10))) for k in range(10)]
    (folder / "fold_indices.txt").write_text("\n".join(folds) + "\n")
    (folder / "class_names.txt").write_text("\n".join(f"class_{c}" for c in range(10)) + "\n")


WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "svhn": write_svhn,
           "stl10": write_stl10}


def unchecked(fpath, md5=None) -> bool:
    """torchvision's ``check_integrity`` without the md5 comparison: the file must exist."""
    return os.path.isfile(fpath)


@pytest.fixture
def md5_bypassed(monkeypatch):
    for module in (torchvision.datasets.utils, torchvision.datasets.cifar,
                   torchvision.datasets.svhn, torchvision.datasets.stl10):
        monkeypatch.setattr(module, "check_integrity", unchecked)


@pytest.fixture
def usb_index_files():
    """Remove the index files USB's split helper saves for this test's seed in its install folder
    (``<base_dir>/data/<dataset>/labeled_idx``), and the folders it made for them."""
    root = Path(usb_data_utils.base_dir) / "data"
    folders = {p for p in root.rglob("*") if p.is_dir()} if root.exists() else set()
    existed = root.exists()
    yield
    for path in root.rglob(f"*_seed{SEED}_idx.npy"):
        path.unlink()
    made = (p for p in root.rglob("*") if p.is_dir() and p not in folders)
    for path in sorted(made, reverse=True):
        if not any(path.iterdir()):
            path.rmdir()
    if not existed and root.exists() and not any(root.iterdir()):
        root.rmdir()


def built_and_checked(config: Path, data_dir: Path, save_dir: Path):
    """Write the config's dataset in its real format, build the algorithm through the launcher
    (with ``SHORT_RUN``), and check that USB's datasets hold exactly what was written:
    ``num_labels`` class-balanced labeled images, the unlabeled set USB's loader defines, the
    test files as the eval set."""
    yaml = read_yaml(str(config))
    dataset, num_labels, num_classes = yaml["dataset"], yaml["num_labels"], yaml["num_classes"]
    per_class = num_labels // num_classes
    written = Written(yaml["img_size"], seed=num_labels)
    WRITERS[dataset](data_dir, written, per_class)
    alg, _ = build_alg(["--c", str(config), "--data_dir", str(data_dir),
                        "--save_dir", str(save_dir), *SHORT_RUN])
    assert alg.args.dataset == dataset and alg.args.num_labels == num_labels
    assert alg.args.img_size == yaml["img_size"]
    dsets, labels = alg.dataset_dict, written.labels

    lb = written.serials(dsets["train_lb"].data)
    assert len(lb) == len(set(lb)) == num_labels
    # SVHN's labeled images are drawn from train and extra together; the others' from train.
    assert set(lb) <= {*written.splits["train"], *written.splits.get("extra", [])}
    np.testing.assert_array_equal(dsets["train_lb"].targets, labels[lb])
    np.testing.assert_array_equal(np.bincount(labels[lb], minlength=num_classes),
                                  [per_class] * num_classes)

    ulb = written.serials(dsets["train_ulb"].data)
    if dataset == "stl10":
        # USB's STL-10: the labeled images (include_lb_to_ulb), then unlabeled_X, then all of
        # train_X, with the labels of the first part only.
        np.testing.assert_array_equal(ulb, np.concatenate([lb, written.splits["unlabeled"],
                                                           written.splits["train"]]))
        unknown = np.full(len(ulb) - num_labels, -1)
        np.testing.assert_array_equal(dsets["train_ulb"].targets,
                                      np.concatenate([labels[lb], unknown]))
    else:
        # CIFAR / SVHN: the labeled images, then the rest of train (and all of SVHN's extra).
        rest = np.setdiff1d(np.concatenate([written.splits[s] for s in ("train", "extra")
                                            if s in written.splits]), lb)
        np.testing.assert_array_equal(ulb[:num_labels], lb)
        np.testing.assert_array_equal(np.sort(ulb[num_labels:]), rest)
        np.testing.assert_array_equal(dsets["train_ulb"].targets, labels[ulb])

    ev = written.serials(dsets["eval"].data)
    np.testing.assert_array_equal(ev, written.splits["test"])
    np.testing.assert_array_equal(dsets["eval"].targets, labels[ev])

    return alg


@pytest.mark.parametrize("config", CLASSIC_CV, ids=lambda p: p.stem)
def test_classic_cv_config_builds_usb_datasets(config, tmp_path, md5_bypassed, usb_index_files):
    built_and_checked(config, tmp_path / "data", tmp_path / "runs")


@pytest.mark.parametrize("config", TRAINED, ids=lambda p: p.stem)
def test_classic_cv_config_trains_on_usb_datasets(config, tmp_path, md5_bypassed, usb_index_files):
    torch.set_num_threads(1)
    alg = built_and_checked(config, tmp_path / "data", tmp_path / "runs")
    alg.train()
    assert alg.it == NUM_TRAIN_ITER and alg.repredictions == 2
    assert alg.store.logits.shape == (len(alg.dataset_dict["train_ulb"]), alg.num_classes)
    assert math.isfinite(alg.log_dict["train/sup_loss"])
    assert math.isfinite(alg.log_dict["eval/loss"])
    assert 0.0 <= alg.log_dict["eval/top-1-acc"] <= 1.0


@pytest.mark.parametrize("config", TRAINED, ids=lambda p: p.stem)
def test_more_labels_than_every_class_has_are_refused(config, tmp_path, md5_bypassed, usb_index_files):
    """More labels a class than any class has: USB's split fails on an empty unlabeled set
    (CIFAR, SVHN) or labels what there is (STL-10); refused with the count asked either way."""
    yaml = read_yaml(str(config))
    dataset, num_classes = yaml["dataset"], yaml["num_classes"]
    written = Written(yaml["img_size"], seed=0)
    WRITERS[dataset](tmp_path / "data", written, 1)
    labeled_from = np.concatenate([written.splits[s] for s in ("train", "extra") if s in written.splits])
    most = int(np.bincount(written.labels[labeled_from], minlength=num_classes).max())
    with pytest.raises(ConfigError, match=rf"num_labels={(most + 1) * num_classes} asks for {most + 1} "
                                          rf"labeled images of every class"):
        build_alg(["--c", str(config), "--data_dir", str(tmp_path / "data"), *SHORT_RUN,
                   "--save_dir", str(tmp_path / "runs"), "--num_labels", str((most + 1) * num_classes)])


def test_more_labels_than_one_class_has_are_refused(tmp_path, md5_bypassed, usb_index_files):
    """CIFAR-10 with 2 training images of class 0 and 4 of the others: 3 labels a class would
    label all of class 0 without a word; refused, naming the class and the largest count."""
    config = next(c for c in TRAINED if read_yaml(str(c))["dataset"] == "cifar10")
    write_cifar10(tmp_path / "data", Written(32, seed=0), np.array([1] + [3] * 9))
    with pytest.raises(ConfigError, match=r"class 0 of 'cifar10' has only 2 training images.*"
                                          r"at most 20\b"):
        build_alg(["--c", str(config), "--data_dir", str(tmp_path / "data"), *SHORT_RUN,
                   "--save_dir", str(tmp_path / "runs"), "--num_labels", "30"])


def shipped_nets() -> Dict[str, Tuple[int, int]]:
    """Each net a shipped config names, with the img_size and num_classes of its first config."""
    nets: Dict[str, Tuple[int, int]] = {}
    for config in ALL_CONFIGS:
        yaml = read_yaml(str(config))
        nets.setdefault(yaml["net"], (yaml.get("img_size", 32), yaml["num_classes"]))
    return nets


@pytest.mark.parametrize("net", sorted(shipped_nets()))
def test_shipped_net_builds_and_runs_forward(net):
    torch.set_num_threads(1)
    img_size, num_classes = shipped_nets()[net]
    torch.manual_seed(0)
    builder = get_net_builder(net, False)
    model = builder(num_classes=num_classes, pretrained=False, pretrained_path=None)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, img_size, img_size))
    assert out["logits"].shape == (1, num_classes)
    assert out["feat"].shape[0] == 1 and torch.isfinite(out["logits"]).all()
