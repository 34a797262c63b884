"""Bad input gets a ConfigError naming the problem and the fix; a finished run's files stay."""
from __future__ import annotations

import pickle

import pytest
import torch
from semilearn.core.hooks import Hook

from r2d2_plugin import ConfigError
from r2d2_plugin.cli.train import run
from conftest import build_alg, file_digest, short_argv


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A finished 40-iteration r2d2 run whose checkpoints must survive every bad call."""
    root = tmp_path_factory.mktemp("saved")
    run(short_argv(root, name="kept"))
    files = sorted((root / "kept").glob("*.pth"))
    assert files
    return root, {f: file_digest(f) for f in files}


BAD = {
    "unknown dataset": (["--dataset", "cifar11"], "unknown dataset 'cifar11'"),
    "unknown algorithm": (["--algorithm", "fixmatchh"], "unknown algorithm 'fixmatchh'"),
    "alpha < 0": (["--r2d2_alpha", "-0.1"], "r2d2_alpha=-0.1 must be >= 0"),
    "beta < 0": (["--r2d2_beta", "-0.03"], "r2d2_beta=-0.03 must be >= 0"),
    "unknown repredict weights": (["--r2d2_repredict_from", "teacher"],
                                  "r2d2_repredict_from='teacher' is not a source of predictions"),
    "unknown labeled loss": (["--r2d2_labeled_loss", "mse"],
                             "r2d2_labeled_loss='mse' is not a labeled loss"),
    "lambda = 0": (["--r2d2_lambda", "0"], "r2d2_lambda=0.0 must be > 0"),
    "lambda < 0": (["--r2d2_lambda", "-5"], "r2d2_lambda=-5.0 must be > 0"),
    "stages do not fit": (["--r2d2_r2_iter", "30"], "add up to 54, not num_train_iter=40"),
    "negative stage": (["--r2d2_warmup_iter", "-8", "--r2d2_r2_iter", "32"], "r2d2_warmup_iter=-8 is negative"),
    "num_classes vs digits": (["--num_classes", "9"], "num_classes=9 but dataset 'digits' has 10 classes"),
    "num_classes vs cifar": (["--dataset", "cifar100"], "num_classes=10 but dataset 'cifar100' has 100"),
    "num_labels vs digits": (["--num_labels", "45"], "num_labels=45 cannot be split evenly"),
    "num_labels vs cifar": (["--dataset", "cifar10", "--num_labels", "45"],
                            "num_labels=45 cannot be split evenly over the 10 classes of 'cifar10'"),
    "missing checkpoint": (["--resume", "True", "--load_path", "nowhere/latest_model.pth"],
                           "load_path='nowhere/latest_model.pth' does not exist"),
    "unknown net": (["--net", "wrn_99"], "unknown net 'wrn_99'"),
    "R2 periods do not fit": (["--r2d2_repredict_period", "8"], "holds fewer than len(r2d2_lr_r2)=4"),
    "lr = 0": (["--lr", "0"], "lr=0.0 must be > 0 for r2d2"),
    "unknown eval split": (["--eval_split", "train"], "eval_split='train' is not available"),
    "val split off digits": (["--dataset", "cifar10", "--eval_split", "val"],
                             "eval_split='val' is not available for dataset 'cifar10'"),
    "alpha = inf": (["--r2d2_alpha", "inf"], "r2d2_alpha=inf must be >= 0 and finite"),
    "lambda = inf": (["--r2d2_lambda", "inf"], "r2d2_lambda=inf must be > 0 and finite"),
    "lr = inf": (["--lr", "inf"], "lr=inf must be > 0"),
    "R2 lr = inf": (["--r2d2_lr_r2", "0.1,inf,0.01,0.001"], "r2d2_lr_r2=inf is not a finite learning rate"),
    "labeled logit < 0": (["--r2d2_labeled_logit", "-10"], "r2d2_labeled_logit=-10.0 must be > 0"),
    "R2 lrs not numbers": (["--r2d2_lr_r2", "0.1,abc"], "is not a list of numbers"),
    "EMA momentum NaN": (["--ema_m", "nan"], "ema_m=nan must be in [0, 1]"),
    "epoch = 0": (["--epoch", "0"], "epoch=0 must be >= 1"),
    "no evaluation": (["--num_eval_iter", "0"], "num_eval_iter=0 must be >= 1"),
    "batch of 0": (["--batch_size", "0"], "batch_size=0 must be >= 1"),
    "negative seed": (["--seed", "-1"], "seed=-1 is outside 0 .. 2**32 - 1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_named_with_its_fix_and_saved_work_stays(case, saved_run):
    root, digests = saved_run
    argv, problem = BAD[case]
    with pytest.raises(ConfigError) as err:
        run(short_argv(root, *argv, name="kept"))
    assert problem in str(err.value)
    assert "Fix:" in str(err.value)
    assert {f: file_digest(f) for f in digests} == digests


def test_a_load_path_without_resume_is_refused_and_its_run_stays(saved_run):
    """With overwrite: True a new run would clear the folder the checkpoint is in."""
    root, digests = saved_run
    with pytest.raises(ConfigError, match="is set but resume is False") as err:
        run(short_argv(root, "--overwrite", "True", "--load_path", str(root / "kept" / "latest_model.pth"), name="kept"))
    assert "set resume: True to continue from it" in str(err.value)
    assert {f: file_digest(f) for f in digests} == digests


@pytest.mark.parametrize("argv, changed", [
    (["--seed", "5"], "seed 0 (now 5)"),
    (["--lr", "0.1"], "lr_warmup 0.05 (now 0.1)"),
    (["--r2d2_warmup_iter", "4", "--r2d2_r2_iter", "20"], "warmup_iter 8 (now 4), r2_iter 16 (now 20)"),
])
def test_a_resume_with_other_settings_is_refused_and_its_run_stays(saved_run, argv, changed):
    """A resume that changed the data, the lr or the stages would train another run than the
    checkpoint's without a word (USB restores the optimizer's and scheduler's state)."""
    root, digests = saved_run
    latest = root / "kept" / "latest_model.pth"
    with pytest.raises(ConfigError, match="was written by a run with other settings") as err:
        run(short_argv(root, *argv, "--resume", "True", "--load_path", str(latest), name="kept"))
    assert changed in str(err.value) and "start a new run" in str(err.value)
    assert {f: file_digest(f) for f in digests} == digests


def test_a_checkpoint_of_another_net_is_refused_and_its_run_stays(saved_run):
    root, digests = saved_run
    latest = root / "kept" / "latest_model.pth"
    with pytest.raises(ConfigError, match="does not fit this run .*RuntimeError") as err:
        run(short_argv(root, "--net", "wrn_28_2", "--resume", "True", "--load_path", str(latest), name="kept"))
    assert "resume with the algorithm and net of the run that wrote it (now r2d2, wrn_28_2)" in str(err.value)
    assert {f: file_digest(f) for f in digests} == digests


def test_a_save_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot be written .* is not a folder"):
        run(short_argv(tmp_path / "file" / "runs"))


class PoisonAt(Hook):
    """At a given iteration the weights go NaN, as a diverging run's would."""

    def __init__(self, it: int) -> None:
        self.at = it

    def before_train_step(self, alg) -> None:
        if alg.it == self.at:
            with torch.no_grad():
                next(alg.model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_before_the_step_and_keeps_the_checkpoint(tmp_path):
    alg, _ = build_alg(short_argv(tmp_path, name="nan"))

    alg.register_hook(PoisonAt(25), "PoisonAt", "LOWEST")
    with pytest.raises(FloatingPointError) as err:
        alg.train()
    message = str(err.value)
    assert "loss is nan at iteration 25 (stage 3)" in message and "Fix:" in message
    latest = tmp_path / "nan" / "latest_model.pth"
    checkpoint = torch.load(latest, map_location="cpu", weights_only=False)
    assert checkpoint["it"] == 20
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert torch.isfinite(checkpoint["r2d2"]["store"]["logits"]).all()
    assert torch.isfinite(alg.store.logits).all()


def test_config_error_survives_pickling():
    """A ConfigError raised in a spawned bench run reaches the parent whole."""
    error = pickle.loads(pickle.dumps(ConfigError("the problem", "the fix")))
    assert (type(error), str(error), error.fix) == (ConfigError, "the problem. Fix: the fix.", "the fix")


@pytest.mark.parametrize("option", [("--r2d2_lazy_repredict", "True"), ("--r2d2_repredict_from", "weak_view")])
def test_row_by_row_repredictions_under_torchrun_are_refused_with_the_config(saved_run, monkeypatch, option):
    """Under torchrun (its environment for rank 0 of 2) the config is refused before the launcher
    builds anything or clears the run's folder (overwrite: True)."""
    root, digests = saved_run
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="work in one process, this run has 2"):
        run(short_argv(root, *option, "--overwrite", "True", name="kept"))
    assert {f: file_digest(f) for f in digests} == digests


@pytest.mark.parametrize("option", [("--r2d2_lazy_repredict", "True"), ("--r2d2_repredict_from", "weak_view")])
def test_row_by_row_repredictions_under_ddp_are_refused_before_training(tmp_path, option):
    """Lazy and weak_view R2 keep their unfilled rows (and lazy R2 its frozen net) per process, so
    a run with several processes stops in ``before_run`` with the fix (the DDP test runs cost a
    torchrun each; here the run is told it is one of two processes)."""
    alg, _ = build_alg(short_argv(tmp_path, *option))
    alg.in_process_group, alg.world_size = (lambda: True), 2
    with pytest.raises(ConfigError, match="work in one process, this run has 2") as err:
        alg.repredictor.before_run(alg)
    assert "r2d2_lazy_repredict: False and r2d2_repredict_from: network or ema under torchrun" in str(err.value)
    assert alg.it == 0 and alg.repredictions == 0
