"""The built-in ``fashionmnist`` dataset (files in the IDX format, written here small; the real
ones where Debian's package put them), its split, short runs through USB's trainer on it, R2's
reprediction from in-memory images against the per-image PIL path, lazy reprediction against
the full pass, and where the pseudo-label accuracy is reported."""
from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
from torchvision import transforms
from torchvision.datasets import FashionMNIST

from r2d2_plugin import ConfigError
from r2d2_plugin.usb import fashionmnist
from conftest import R2D2_SHORT, ROOT, SHORT, build_alg, short_argv, unlabeled_logits

CONFIG = str(ROOT / "configs" / "r2d2_fashionmnist_40.yaml")
# Fixture: per class, training and test images (the training count divisible by 6: the val sixth).
TRAIN_PER_CLASS, TEST_PER_CLASS = 24, 3
NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """``array`` (uint8) as an IDX file: magic 0x0000 08 <ndim>, big-endian dims, the bytes."""
    raw = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    with (gzip.open(str(path) + ".gz", "wb") if gz else open(path, "wb")) as f:
        f.write(raw)


def fixture_arrays() -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Grey 28x28 images, class-sorted by a bright row at 2 * label, each stamped with its serial
    (pixels (0, 0), (0, 1): high and low byte; training serials first, then test)."""
    rng = np.random.RandomState(7)
    out, serial = {}, 0
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        images = rng.randint(0, 100, (len(labels), 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels):
            image[4 + 2 * label] = 250
            image[0, :2] = divmod(serial, 256)
            serial += 1
        out[split] = images, labels
    return out


def write_fixture(folder: Path, gz: bool) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    arrays = fixture_arrays()
    folder.mkdir(parents=True, exist_ok=True)
    for split, (image_name, label_name) in NAMES.items():
        write_idx(folder / image_name, arrays[split][0], gz)
        write_idx(folder / label_name, arrays[split][1], gz)
    return arrays


def serials(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(np.int64) * 256 + images[:, 0, 1, 0]


def load(folder: Path):
    return fashionmnist.load_fashionmnist(str(folder), system_dir=str(folder / "no-system-copy"),
                                          allow_download=False)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_reads_a_flat_folder(tmp_path, gz):
    written = write_fixture(tmp_path / "flat", gz)
    data = load(tmp_path / "flat")
    for split in NAMES:
        assert np.array_equal(data[split][0], written[split][0])
        assert np.array_equal(data[split][1], written[split][1])


def test_reads_torchvisions_raw_layout(tmp_path):
    written = write_fixture(tmp_path / "root" / "FashionMNIST" / "raw", gz=False)
    data = load(tmp_path / "root")
    reference = FashionMNIST(str(tmp_path / "root"), train=True, download=False)
    assert np.array_equal(data["train"][0], reference.data.numpy())
    assert np.array_equal(data["train"][1], reference.targets.numpy())
    assert np.array_equal(data["test"][1], written["test"][1])


@pytest.mark.skipif(fashionmnist.find_files("/nonexistent") is None,
                    reason=f"no Fashion-MNIST in {fashionmnist.SYSTEM_DIR} (apt-get install dataset-fashion-mnist)")
def test_reads_debians_copy_of_the_real_files(tmp_path):
    data = fashionmnist.load_fashionmnist(str(tmp_path), allow_download=False)
    (train, train_labels), (test, test_labels) = data["train"], data["test"]
    assert train.shape == (60000, 28, 28) and test.shape == (10000, 28, 28)
    assert train.dtype == np.uint8 and train_labels.dtype == np.int64
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
    assert round(float(train.mean()) / 255, 4) == 0.2860  # the published training mean


def test_missing_files_name_both_ways_to_get_them(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "data_dir" in message
    assert "train-images-idx3-ubyte" in message and "Fix:" in message


def test_a_broken_file_is_named(tmp_path):
    write_fixture(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x02abcdefgh")
    with pytest.raises(ConfigError, match="t10k-labels-idx1-ubyte"):
        load(tmp_path)


@pytest.mark.parametrize("broken", ["not gzip", "truncated"])
def test_a_broken_gz_file_is_named(tmp_path, broken):
    write_fixture(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(b"plain text, not gzip" if broken == "not gzip" else data[: len(data) // 2])
    with pytest.raises(ConfigError, match="train-labels-idx1-ubyte.gz is not a readable IDX file"):
        load(tmp_path)


def datasets(folder: Path, seed: int, eval_split: str = "test", num_labels: int = 40, img_size: int = 28,
             alg: str = "r2d2"):
    args = SimpleNamespace(seed=seed, eval_split=eval_split, img_size=img_size, crop_ratio=0.875)
    return fashionmnist.get_fashionmnist(args, alg, num_labels, 10, True, str(folder))


def per_class_draw(labels: np.ndarray, among: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """results/fashionmnist_val/make_npz.py's draw: per class in order, the first ``per_class``
    of a RandomState(seed) permutation of that class's indices among ``among``."""
    rng = np.random.RandomState(seed)
    return np.sort(np.concatenate([rng.permutation(among[labels[among] == c])[:per_class]
                                   for c in range(10)]))


def test_split_sizes_balance_and_seeds(tmp_path):
    written = write_fixture(tmp_path, gz=True)
    train_labels = written["train"][1]
    n_train = 10 * TRAIN_PER_CLASS
    first = datasets(tmp_path, seed=0)
    lb, ulb, ev = first["train_lb"], first["train_ulb"], first["eval"]
    assert (len(lb), len(ulb), len(ev)) == (40, n_train, 10 * TEST_PER_CLASS)
    assert lb.data.shape == (40, 28, 28, 3) and np.bincount(lb.targets).tolist() == [4] * 10
    assert np.array_equal(serials(ev.data), np.arange(n_train, n_train + 10 * TEST_PER_CLASS))
    assert np.array_equal(np.sort(serials(ulb.data)), np.arange(n_train))
    assert np.array_equal(serials(lb.data), per_class_draw(train_labels, np.arange(n_train), 4, 0))
    assert np.array_equal(lb.targets, train_labels[serials(lb.data)])

    again, other = datasets(tmp_path, seed=0), datasets(tmp_path, seed=1)
    assert np.array_equal(again["train_lb"].data, lb.data)
    assert not np.array_equal(serials(other["train_lb"].data), serials(lb.data))

    with pytest.raises(ConfigError, match="num_labels=45 cannot be split evenly"):
        datasets(tmp_path, seed=0, num_labels=45)


def test_val_split_is_held_out_and_fixed_across_seeds(tmp_path):
    written = write_fixture(tmp_path, gz=True)
    train_labels = written["train"][1]
    n_train = 10 * TRAIN_PER_CLASS
    expected_val = per_class_draw(train_labels, np.arange(n_train), TRAIN_PER_CLASS // 6, 12345)
    for seed in (0, 1):
        dsets = datasets(tmp_path, seed=seed, eval_split="val")
        val = serials(dsets["eval"].data)
        training = np.concatenate([serials(dsets["train_lb"].data), serials(dsets["train_ulb"].data)])
        assert np.array_equal(val, expected_val)
        assert np.array_equal(dsets["eval"].targets, train_labels[val])
        assert not set(val) & set(training)
        assert len(dsets["train_ulb"]) == n_train - len(val)
        pool = np.setdiff1d(np.arange(n_train), expected_val)
        assert np.array_equal(serials(dsets["train_lb"].data), per_class_draw(train_labels, pool, 4, seed))


def test_img_size_32_resizes_every_view(tmp_path):
    write_fixture(tmp_path, gz=False)
    dsets = datasets(tmp_path, seed=0, img_size=32, alg="fixmatch")
    assert dsets["train_ulb"].data.shape[1:] == (32, 32, 3) and dsets["eval"].data.shape[1:] == (32, 32, 3)
    item = dsets["train_ulb"][0]
    assert item["x_ulb_w"].shape == item["x_ulb_s"].shape == (3, 32, 32)
    assert dsets["eval"][0]["x_lb"].shape == (3, 32, 32)


def fashion_argv(tmp_path: Path, data_dir: Path, algorithm: str, *extra: str):
    options = R2D2_SHORT if algorithm == "r2d2" else []
    return ["--c", CONFIG, "--algorithm", algorithm, "--save_dir", str(tmp_path / "runs"),
            "--save_name", algorithm, "--data_dir", str(data_dir), *SHORT, *options, *extra]


def test_r2d2_trains_on_fashionmnist_through_usb(tmp_path):
    write_fixture(tmp_path / "data", gz=True)
    alg, messages = build_alg(fashion_argv(tmp_path, tmp_path / "data", "r2d2", "--eval_split", "val"))
    alg.train()
    assert alg.it == 40 and alg.repredictions == 6
    assert len(alg.dataset_dict["eval"]) == 10 * TRAIN_PER_CLASS // 6
    assert 0.0 <= alg.log_dict["eval/top-1-acc"] <= 1.0
    # The config's lazy R2: the accuracy of the rows filled since the last reprediction.
    filled = alg.repredictor.filled()
    labels = torch.as_tensor(alg.dataset_dict["train_ulb"].targets)[filled]
    expected = (alg.store.logits[filled].argmax(dim=1) == labels).double().mean().item()
    assert alg.log_dict["r2d2/pseudo_label_acc"] == pytest.approx(expected)
    assert any(m.startswith("r2d2: reprediction 6 ") and "frozen" in m for m in messages)


def test_fixmatch_trains_on_fashionmnist_with_strong_views(tmp_path):
    write_fixture(tmp_path / "data", gz=False)
    alg, _ = build_alg(fashion_argv(tmp_path, tmp_path / "data", "fixmatch"))
    ulb = next(iter(alg.loader_dict["train_ulb"]))
    assert ulb["x_ulb_w"].shape[1:] == ulb["x_ulb_s"].shape[1:] == (3, 28, 28)
    alg.train()
    assert alg.it == 40
    assert 0.0 <= alg.log_dict["eval/top-1-acc"] <= 1.0
    assert math.isfinite(alg.log_dict["train/unsup_loss"])


@pytest.mark.parametrize("case", ["array", "array after a same-size Resize", "per image (Resize to 24)"])
def test_repredicting_from_the_array_equals_the_per_image_path(tmp_path, case):
    write_fixture(tmp_path / "data", gz=True)
    # R2 from the network (the config's EMA weights exist only once training has started), a full pass.
    alg, _ = build_alg(fashion_argv(tmp_path, tmp_path / "data", "r2d2", "--r2d2_repredict_from", "network",
                                    "--r2d2_lazy_repredict", "False"))
    eval_dset = alg.dataset_dict["eval"]
    steps = list(eval_dset.transform.transforms)
    if case != "array":
        eval_dset.transform = transforms.Compose([transforms.Resize(28 if "same" in case else 24), *steps])
    alg.train_step(**alg.process_batch(**next(iter(alg.loader_dict["train_lb"])),
                                       **next(iter(alg.loader_dict["train_ulb"]))))  # BatchNorm statistics move
    hook = alg.hooks_dict["RepredictHook"]
    hook.repredict(alg)
    assert (hook.view is None) == ("per image" in case)
    expected = unlabeled_logits(alg)  # the per-image PIL path
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(alg.store.logits, expected, atol=1e-5, rtol=1e-5)


# Lazy and full-pass runs differ only by float rounding (a fill predicts a step's 16 rows, the
# full pass 128 at a time), which 40 training steps amplify: on this machine's CPU they are
# bit-identical, under other instruction sets (MKL / oneDNN / ATen at AVX2 or SSE4, 1 and 2
# threads) up to 3.2e-3 in the store and 6.3e-3 in the weights
# (results/test_margins/lazy_fill.md); 0.05 is 8 times that. Which rows are filled, and with
# what, is checked against the frozen net's own full pass to 1e-5 (one forward pass, no training).
RUN_ROUNDING = 0.05


@pytest.mark.parametrize("case", ["array", "per image (Resize to 24)"])
def test_lazy_repredictions_train_as_the_full_pass(tmp_path, case):
    """``r2d2_lazy_repredict``: a row takes the frozen net's logits (the EMA weights here, as in
    the Fashion-MNIST configs) when training first reads it: the full pass's values for every row
    read since the last reprediction (one forward pass: to 1e-5), the other rows never computed;
    the run trains as the full pass's, up to float rounding."""
    write_fixture(tmp_path / "data", gz=True)
    runs = {}
    for lazy in ("False", "True"):
        alg, _ = build_alg(fashion_argv(tmp_path / lazy, tmp_path / "data", "r2d2", "--r2d2_lazy_repredict", lazy))
        if case != "array":
            eval_dset = alg.dataset_dict["eval"]
            eval_dset.transform = transforms.Compose([transforms.Resize(24), *eval_dset.transform.transforms])
        alg.train()
        runs[lazy] = alg
    full, lazy = runs["False"], runs["True"]
    assert full.repredictions == lazy.repredictions == 6 and full.repredictor.filled() is None
    assert (lazy.repredictor.view is None) == (case != "array")
    # The frozen net predicts with digits_cnn's three BatchNorms folded into its convolutions.
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lazy.repredictor.frozen.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in lazy.model.modules()) == 3
    filled = lazy.repredictor.filled()
    # Only the fine-tune's 8 iterations x 16 unlabeled rows follow the last reprediction.
    assert 0 < int(filled.sum()) <= 8 * 16 < len(filled)
    # The frozen net's full pass, computed here on the per-image path.
    frozen_pass = unlabeled_logits(lazy, lazy.repredictor.frozen)
    torch.testing.assert_close(lazy.store.logits[filled], frozen_pass[filled], atol=1e-5, rtol=1e-5)
    assert (lazy.store.logits[~filled] - frozen_pass[~filled]).abs().amax(dim=1).min() > 1e-3
    torch.testing.assert_close(lazy.store.logits[filled], full.store.logits[filled], atol=RUN_ROUNDING, rtol=0)
    for weights in ("model", "ema_model"):
        expected = getattr(full, weights).state_dict()
        for name, value in getattr(lazy, weights).state_dict().items():
            torch.testing.assert_close(value, expected[name], atol=RUN_ROUNDING, rtol=0, msg=name)
    labels = torch.as_tensor(lazy.dataset_dict["train_ulb"].targets)
    hits = lazy.store.logits[filled].argmax(dim=1) == labels[filled]
    assert lazy.log_dict["r2d2/pseudo_label_acc"] == pytest.approx(hits.double().mean().item())


def test_a_row_filled_inside_the_steps_autocast_takes_fp32_logits(tmp_path):
    """With ``amp: True`` the training step, where lazy R2 fills its rows, runs under autocast;
    the frozen net still predicts in fp32, as the full pass does (CPU autocast to bf16 here)."""
    write_fixture(tmp_path / "data", gz=True)
    alg, _ = build_alg(fashion_argv(tmp_path, tmp_path / "data", "r2d2", "--r2d2_repredict_from", "network",
                                    "--r2d2_lazy_repredict", "True"))
    hook = alg.hooks_dict["RepredictHook"]
    hook.repredict(alg)
    rows = torch.arange(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hook.fill(alg, rows, torch.zeros(16, 10))
    expected = unlabeled_logits(alg)[rows]  # fp32, the per-image PIL path, outside autocast
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(alg.store.logits[rows], expected, atol=1e-5, rtol=1e-5)


def write_npz(path: Path) -> None:
    """16x16 grey images, 10 classes, 40 labeled (4 per class), the other 160 labeled -1."""
    rng = np.random.RandomState(3)
    labels = np.repeat(np.arange(10), 20)
    images = rng.randint(0, 100, (200, 16, 16)).astype(np.uint8)
    images[np.arange(200), labels + 3] = 250
    marks = np.where(np.arange(200) % 20 < 4, labels, -1)
    np.savez(path, images=images, labels=marks, eval_images=images[::10], eval_labels=labels[::10])


def test_pseudo_label_accuracy_is_absent_where_unlabeled_labels_are_unknown(tmp_path):
    write_npz(tmp_path / "data.npz")
    alg, messages = build_alg(short_argv(tmp_path, "--dataset", "npz", "--data_dir", str(tmp_path / "data.npz")))
    assert (np.asarray(alg.dataset_dict["train_ulb"].targets) >= 0).sum() == 40
    alg.train()
    assert alg.repredictions == 6 and "r2d2/pseudo_label_entropy" in alg.log_dict
    assert "r2d2/pseudo_label_acc" not in alg.log_dict
    assert math.isnan(alg.store.accuracy())
    repredictions = [m for m in messages if m.startswith("r2d2: reprediction")]
    assert len(repredictions) == 6 and not any("acc" in m for m in repredictions)


def test_pseudo_label_accuracy_is_reported_on_digits(tmp_path):
    alg, messages = build_alg(short_argv(tmp_path))
    alg.it = alg.num_log_iter - 1  # a log iteration of the warm-up: the store holds no pseudo-labels yet
    assert set(alg.r2d2_metrics(stage=1)) == {"r2d2/stage", "r2d2/repredictions"}
    alg.it = 0
    alg.train()
    labels = torch.as_tensor(np.asarray(alg.dataset_dict["train_ulb"].targets))
    expected = (alg.store.logits.argmax(dim=1) == labels).double().mean().item()
    assert alg.log_dict["r2d2/pseudo_label_acc"] == pytest.approx(expected)
    last = next(m for m in messages if m.startswith("r2d2: reprediction 6 "))
    assert "pseudo-label acc" in last
