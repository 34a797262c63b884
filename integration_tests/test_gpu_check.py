"""The GPU check (scripts/gpu_check.sh, r2d2_plugin/tools/gpu_check.py) on this CPU machine: without
CUDA it stops at once, writing nothing, with a non-zero status; the Fashion-MNIST subset it carries;
and its own code end to end on the CPU through the hidden ``--allow_cpu`` (a dry run of the
check's plumbing on a tiny budget: its numbers are not GPU measurements and are not asserted)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from r2d2_plugin.tools import gpu_check
from r2d2_plugin.usb import fashionmnist
from conftest import ROOT

ENV = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
NEEDS_DATA = pytest.mark.skipif(fashionmnist.find_files("/nonexistent") is None,
                                reason="needs Debian's dataset-fashion-mnist")


def rows(path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_check_stops_at_once_writes_nothing_and_fails(tmp_path):
    out = tmp_path / "gpu"
    for command, says in ((["bash", "scripts/gpu_check.sh", "--out", str(out)], "nothing installed"),
                          ([sys.executable, "-m", "r2d2_plugin.tools.gpu_check", "--out", str(out)],
                           "nothing written")):
        done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0
        assert "gpu_check: no CUDA device is visible" in done.stderr and says in done.stderr
        assert not out.exists()


@NEEDS_DATA
def test_the_fashion_subset_is_class_balanced_and_made_of_original_images(tmp_path):
    subset = str(tmp_path / "subset")
    assert gpu_check.write_fashion_subset(subset, {"train": 3, "test": 2}) == {"train": 30, "test": 20}
    read = fashionmnist.load_fashionmnist(subset, str(tmp_path / "none"), allow_download=False)
    original = fashionmnist.load_fashionmnist(fashionmnist.SYSTEM_DIR, allow_download=False)
    for split, per_class in (("train", 3), ("test", 2)):
        images, labels = read[split]
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
        known = {(image.tobytes(), label) for image, label in zip(*original[split])}
        assert all((image.tobytes(), label) in known for image, label in zip(images, labels))


@NEEDS_DATA
def test_dry_run_on_the_cpu_writes_every_part(tmp_path):
    data, out = str(tmp_path / "data"), tmp_path / "gpu"
    gpu_check.write_fashion_subset(data, {"train": 3, "test": 2})
    # R2-D2 in 10 iterations: warm-up 2, D2 2, R2 5 (4 periods of 1), fine-tune 1; it repredicts
    # at the start of D2, of each R2 period and of the fine-tune: 6 times.
    budget = 10
    command = [sys.executable, "-m", "r2d2_plugin.tools.gpu_check", "--allow_cpu", "--out", str(out),
               "--data_dir", data, "--budget", str(budget), "--algorithms", "r2d2", "fixmatch",
               "--amp", "off", "--store_rows", "1000", "--store_repeats", "2", "--deadline", "3600",
               "--tests", "integration_tests/test_cuda.py::test_a_checkpoint_store_of_another_shape_is_refused",
               # launcher options of every run: a small batch for the CPU, 2 labels per class
               "--num_labels", "20", "--batch_size", "4", "--uratio", "1", "--eval_batch_size", "32",
               "--num_workers", "0"]
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[-1].startswith("gpu_check: PASS on the CPU (dry run, not a GPU measurement)")

    assert [(r["part"], r["status"]) for r in rows(out / "checks.csv")] == [
        ("tests", "pass"), ("train", "pass"), ("torchrun", "pass"), ("store", "pass")]
    assert [(r["test"].split("::")[-1], r["outcome"]) for r in rows(out / "tests.csv")] == [
        ("test_a_checkpoint_store_of_another_shape_is_refused[cpu]", "passed"),
        ("test_a_checkpoint_store_of_another_shape_is_refused[cuda]", "skipped")]
    train = {r["algorithm"]: r for r in rows(out / "train.csv")}
    assert set(train) == {"r2d2", "fixmatch"}
    assert all(r["amp"] == "off" and int(r["iterations"]) == budget and int(r["steps_timed"]) >= 1
               and float(r["step_ms"]) > 0 and 0 <= float(r["final_top1"]) <= 1 for r in train.values())
    assert train["r2d2"]["repredictions"] == "6" and float(train["r2d2"]["repredict_s"]) > 0
    assert train["fixmatch"]["repredictions"] == "" and float(train["fixmatch"]["step_vs_fixmatch"]) == 1.0
    store = rows(out / "store.csv")
    assert len(store) == 5 and all(r["measured"].startswith("yes (the CPU") for r in store)
    report = (out / "gpu.md").read_text()
    assert "NOT A GPU MEASUREMENT" in report and "## Training" in report and "## Pseudo-label store" in report
    assert (out / "COMMAND").read_text().startswith("python -m r2d2_plugin.tools.gpu_check --allow_cpu")
