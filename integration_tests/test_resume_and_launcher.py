"""USB's resume path, the launcher with USB baselines, and the offline datasets."""
from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
from semilearn.core.hooks import Hook

from r2d2_plugin.usb import datasets as data
from r2d2_plugin.cli.config import get_config
from r2d2_plugin.cli.train import prepare, run
from conftest import ROOT, build_alg, short_argv


class Crash(Exception):
    pass


class CrashAt(Hook):
    """Stops the process's training at a given iteration, as a kill would."""

    def __init__(self, it: int) -> None:
        self.at = it

    def before_train_step(self, alg) -> None:
        if alg.it == self.at:
            raise Crash(f"killed at iteration {alg.it}")


def final_state(path):
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint["model"], checkpoint["ema_model"], checkpoint["r2d2"]["store"]["logits"]


FULL_PASS, LAZY, WEAK_VIEW = (("--r2d2_lazy_repredict", "False"), ("--r2d2_lazy_repredict", "True"),
                              ("--r2d2_repredict_from", "weak_view"))


@pytest.mark.parametrize("algorithm, r2", [("r2d2", FULL_PASS), ("r2d2_strong", FULL_PASS), ("r2d2", LAZY),
                                           ("r2d2_strong", WEAK_VIEW)])
def test_resume_matches_an_uninterrupted_run(tmp_path, algorithm, r2):
    options = ("--algorithm", algorithm, *r2)
    run(short_argv(tmp_path, *options, name="straight"))

    alg, _ = build_alg(short_argv(tmp_path, *options, name="interrupted"))
    alg.register_hook(CrashAt(20), "CrashAt", "HIGHEST")
    with pytest.raises(Crash):
        alg.train()
    latest = tmp_path / "interrupted" / "latest_model.pth"
    saved = torch.load(latest, map_location="cpu", weights_only=False)
    assert saved["it"] == 20 and saved["r2d2"]["repredictions"] == 2
    # Row-by-row R2 is halfway through its second period: the rows still to fill (and lazy R2's
    # frozen net; weak_view has none).
    row_state = saved["r2d2"]["lazy_repredict"]
    assert (row_state is None) == (r2 == FULL_PASS)
    assert r2 == FULL_PASS or (row_state["net"] is None) == (r2 == WEAK_VIEW)

    results = run(short_argv(tmp_path, *options, "--resume", "True", "--load_path", str(latest),
                             name="interrupted"))
    assert 0.0 <= results["eval/final_acc"] <= 1.0

    model_a, ema_a, store_a = final_state(tmp_path / "straight" / "latest_model.pth")
    model_b, ema_b, store_b = final_state(latest)
    assert torch.equal(store_a, store_b)
    for name in model_a:
        torch.testing.assert_close(model_b[name], model_a[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(ema_b[name], ema_a[name], rtol=0, atol=0, msg=name)


def test_resumed_curves_hold_each_iteration_once(tmp_path):
    """Killed at iteration 26, six steps after the last checkpoint (20), the run had logged
    iteration 25; the resumed run logs it again, and curves.csv keeps one row for it."""
    alg = prepare(get_config(short_argv(tmp_path)))  # the launcher's path, its CurveHook included
    alg.register_hook(CrashAt(26), "CrashAt", "HIGHEST")
    with pytest.raises(Crash):
        alg.train()
    latest = tmp_path / "run" / "latest_model.pth"
    assert torch.load(latest, map_location="cpu", weights_only=False)["it"] == 20
    run(short_argv(tmp_path, "--resume", "True", "--load_path", str(latest)))
    with open(tmp_path / "run" / "curves.csv", newline="") as f:
        iterations = [int(row["iteration"]) for row in csv.DictReader(f)]
    # every num_log_iter (5) and num_eval_iter (10) iterations of SHORT's 40
    assert iterations == list(range(5, 41, 5))

    # Resuming the finished run says so and trains nothing.
    finished = torch.load(latest, map_location="cpu", weights_only=False)
    curves = (tmp_path / "run" / "curves.csv").read_text()
    run(short_argv(tmp_path, "--resume", "True", "--load_path", str(latest)))
    assert "its run had finished (num_train_iter=40): nothing is trained" in (tmp_path / "run" / "log.txt").read_text()
    again = torch.load(latest, map_location="cpu", weights_only=False)
    assert (tmp_path / "run" / "curves.csv").read_text() == curves
    for name, tensor in finished["model"].items():
        assert torch.equal(again["model"][name], tensor), name


def test_fixmatch_runs_through_the_same_launcher_on_the_same_split(tmp_path):
    r2d2, _ = build_alg(short_argv(tmp_path, name="r2d2"))
    fixmatch, _ = build_alg(short_argv(tmp_path, "--algorithm", "fixmatch", name="fixmatch", r2d2=False))
    for key in ("train_lb", "train_ulb", "eval"):
        assert np.array_equal(r2d2.dataset_dict[key].data, fixmatch.dataset_dict[key].data)
        assert np.array_equal(r2d2.dataset_dict[key].targets, fixmatch.dataset_dict[key].targets)
    assert "x_ulb_s" in fixmatch.dataset_dict["train_ulb"][0]
    assert "x_ulb_s" not in r2d2.dataset_dict["train_ulb"][0]

    results = run(short_argv(tmp_path, "--algorithm", "fixmatch", "--num_train_iter", "20",
                             "--epoch", "2", name="fixmatch", r2d2=False))
    assert 0.0 <= results["eval/final_acc"] <= 1.0
    assert (tmp_path / "fixmatch" / "latest_model.pth").is_file()


def test_digits_split_is_seeded_class_balanced_and_eval_is_fixed(tmp_path):
    a, _ = build_alg(short_argv(tmp_path, "--seed", "0", name="a"))
    b, _ = build_alg(short_argv(tmp_path, "--seed", "0", name="b"))
    c, _ = build_alg(short_argv(tmp_path, "--seed", "1", name="c"))
    assert np.array_equal(a.dataset_dict["train_lb"].data, b.dataset_dict["train_lb"].data)
    assert not np.array_equal(a.dataset_dict["train_lb"].data, c.dataset_dict["train_lb"].data)
    assert np.array_equal(a.dataset_dict["eval"].data, c.dataset_dict["eval"].data)
    assert np.bincount(a.dataset_dict["train_lb"].targets).tolist() == [4] * 10
    n_eval, n_ulb = len(a.dataset_dict["eval"]), len(a.dataset_dict["train_ulb"])
    per_class = np.bincount(data.digits_arrays()[1])
    assert n_eval + n_ulb == 1797 and n_eval == sum(per_class // 3)
    assert np.bincount(a.dataset_dict["eval"].targets).tolist() == (per_class // 3).tolist()
    assert a.store.logits.shape == (n_ulb, 10)


def test_validation_split_is_held_out_of_training_and_of_the_eval_third(tmp_path):
    test, _ = build_alg(short_argv(tmp_path, name="test"))
    val, _ = build_alg(short_argv(tmp_path, "--eval_split", "val", name="val"))

    def rows(dset) -> set:
        return {img.tobytes() + bytes([int(t)]) for img, t in zip(dset.data, dset.targets)}

    held, third = rows(val.dataset_dict["eval"]), rows(test.dataset_dict["eval"])
    trained = rows(val.dataset_dict["train_ulb"]) | rows(val.dataset_dict["train_lb"])
    assert len(val.dataset_dict["eval"]) == sum(np.bincount(test.dataset_dict["train_ulb"].targets) // 5)
    assert not held & trained and not held & third
    assert len(val.dataset_dict["train_ulb"]) + len(val.dataset_dict["eval"]) == len(test.dataset_dict["train_ulb"])


def test_users_npz_data_trains_through_the_same_path(tmp_path):
    images, labels = data.digits_arrays()
    labels = labels.copy()
    rng = np.random.RandomState(0)
    keep = np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:5] for k in range(10)])
    unlabeled = np.setdiff1d(np.arange(len(labels)), keep)
    eval_idx, train_unl = unlabeled[:300], unlabeled[300:]
    train = np.concatenate([keep, train_unl])
    train_labels = np.where(np.isin(train, keep), labels[train], -1)
    np.savez(tmp_path / "mine.npz", images=images[train, :, :, 0], labels=train_labels,
             eval_images=images[eval_idx], eval_labels=labels[eval_idx])

    alg, _ = build_alg(short_argv(tmp_path, "--dataset", "npz", "--data_dir", str(tmp_path / "mine.npz")))
    assert alg.args.num_labels == 50 and len(alg.dataset_dict["eval"]) == 300
    assert len(alg.dataset_dict["train_ulb"]) == len(train)
    alg.train()
    assert alg.repredictions == 6 and 0.0 <= alg.log_dict["eval/top-1-acc"] <= 1.0


def test_cli_prints_problem_and_fix_and_exits_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "r2d2_plugin.cli.train", "--c",
                           str(ROOT / "configs" / "r2d2_digits_40.yaml"), "--dataset", "mnist"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "unknown dataset 'mnist'" in proc.stderr and "Fix:" in proc.stderr
