"""``r2d2_strong`` (R2-D2 trained on USB's strong view) through USB's trainer on digits."""
from __future__ import annotations

import pytest
import torch
from semilearn.core.hooks import Hook

from r2d2_plugin import ConfigError, d2_loss
from r2d2_plugin.cli.config import get_config
from conftest import build_alg, short_argv, supervised_control


class ServedViews(Hook):
    """Records the views USB's unlabeled dataset serves at every iteration (its algorithm name;
    sampling it here would draw from the training's RNG)."""

    def before_run(self, algorithm) -> None:
        self.names = []

    def before_train_step(self, algorithm) -> None:
        self.names.append(algorithm.dataset_dict["train_ulb"].alg)


# 800 iterations on digits with 40 labels (USB options; the control runs with the same), and the
# variant's stages: warm-up 200 / D2 300 / R2 250 (4 periods of 60, the last 70) / fine-tune 50,
# at the network lrs of configs/r2d2_strong_digits_40.yaml.
STRONG_BUDGET = ["--num_train_iter", "800", "--epoch", "8", "--num_eval_iter", "100",
                 "--ema_m", "0.99", "--batch_size", "16", "--uratio", "3", "--seed", "SEED"]
STRONG_STAGES = ["--r2d2_warmup_iter", "200", "--r2d2_d2_iter", "300", "--r2d2_r2_iter", "250",
                 "--r2d2_repredict_period", "60", "--r2d2_finetune_iter", "50", "--r2d2_lambda", "500",
                 "--r2d2_lr_d2", "0.15", "--r2d2_lr_r2", "0.15,0.1,0.05,0.005"]
# MEASURED
STRONG_MARGIN = 0.0
STRONG_PSEUDO_LABEL_MARGIN = 0.0


def test_variant_beats_supervised_training_through_usb_train(tmp_path):
    """The strong view is served (after the warm-up) and trained on; at the end the variant's
    top-1 and pseudo-labels beat USB's supervised-only training (the control: same config,
    data, net, seed, batch, budget and thread count) by the margins above."""
    alg, messages = build_alg(short_argv(tmp_path, "--algorithm", "r2d2_strong", *STRONG_BUDGET,
                                         *STRONG_STAGES))
    sample = alg.dataset_dict["train_ulb"][0]
    assert {"x_ulb_w", "x_ulb_s"} <= set(sample)
    assert not torch.equal(sample["x_ulb_w"], sample["x_ulb_s"])
    served = ServedViews()
    alg.register_hook(served, "ServedViews", "LOWEST")
    alg.train()
    assert alg.it == 800 and alg.repredictions == 6
    # 100 iterations per USB epoch: epochs 0-1 are the warm-up, where USB's dataset serves
    # indices only.
    assert served.names == ["supervised"] * 200 + ["fixmatch"] * 600
    alg.dataset_dict["train_ulb"].alg = "supervised"
    assert set(alg.dataset_dict["train_ulb"][0]) == {"idx_ulb"}
    assert any(m.startswith("r2d2: reprediction 1 ") and "iteration 200" in m for m in messages)

    control = supervised_control(tmp_path, *STRONG_BUDGET)
    top1, pseudo_label_acc = alg.log_dict["eval/top-1-acc"], alg.log_dict["r2d2/pseudo_label_acc"]
    assert top1 - control.final > STRONG_MARGIN, (top1, control)
    assert pseudo_label_acc - control.unlabeled > STRONG_PSEUDO_LABEL_MARGIN, (pseudo_label_acc, control)


def test_store_descends_from_the_weak_view_and_the_strong_view_is_trained(tmp_path):
    alg, _ = build_alg(short_argv(tmp_path, "--algorithm", "r2d2_strong", "--r2d2_warmup_iter", "0",
                                  "--r2d2_d2_iter", "16"))
    assert alg.schedule.stage(0) == 2
    alg.store.logits = torch.randn(alg.store.logits.shape, generator=torch.Generator().manual_seed(0)) * 3
    data_lb, data_ulb = next(zip(alg.loader_dict["train_lb"], alg.loader_dict["train_ulb"]))
    batch = alg.process_batch(**data_lb, **data_ulb)
    idx, num_lb = batch["idx_ulb"], len(batch["y_lb"])
    assert len(set(idx.tolist())) == len(idx)
    num_ulb = len(idx)

    with torch.no_grad():
        logits = alg.model(torch.cat((batch["x_lb"], batch["x_ulb_w"], batch["x_ulb_s"])))["logits"]
    weak, strong = logits[num_lb:num_lb + num_ulb], logits[num_lb + num_ulb:]
    before = alg.store.logits.clone()
    targets = torch.cat((alg.labeled_targets(batch["y_lb"]), before[idx]))
    trained = torch.cat((logits[:num_lb], strong))
    # The KL term on the strong view, the entropy term (default r2d2_strong_entropy_view: weak)
    # on the weak view.
    entropy_of = torch.cat((logits[:num_lb], weak))
    expected_loss = (d2_loss(trained, targets, alg.alpha, 0.0).sum()
                     + d2_loss(entropy_of, targets, 0.0, alg.beta).sum()) / (num_lb + num_ulb)
    step = alg.lam * alg.alpha / (num_lb + num_ulb)

    def closed_form(view: torch.Tensor) -> torch.Tensor:
        return before[idx] - step * (torch.softmax(before[idx], -1) - torch.softmax(view, -1))

    _, log_dict = alg.train_step(**batch)
    after = alg.store.logits
    torch.testing.assert_close(after[idx], closed_form(weak), rtol=1e-5, atol=1e-6)
    assert (after[idx] - closed_form(strong)).abs().max() > 1e-3
    assert log_dict["train/total_loss"] == pytest.approx(expected_loss.item(), rel=1e-5)
    untouched = torch.ones(len(before), dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(after[untouched], before[untouched])


def test_threshold_masks_and_temperature_sharpens(tmp_path):
    alg, _ = build_alg(short_argv(tmp_path, "--algorithm", "r2d2_strong", "--r2d2_strong_T", "0.5",
                                  "--r2d2_strong_threshold", "0.9", "--r2d2_strong_entropy_view", "strong"))
    logits = torch.zeros(4, 10)
    targets = torch.zeros(4, 10)
    targets[1, 3] = 1.0   # top probability 0.23 at T = 1; 0.45 at T = 0.5: masked
    targets[2, 3] = 3.0   # top probability 0.69 at T = 1; 0.98 at T = 0.5: kept
    targets[3, 3] = 8.0
    per_sample = alg.per_sample_loss(logits, targets, num_lb=1, logits_w=torch.zeros(3, 10))
    expected = d2_loss(logits, torch.cat((targets[:1], targets[1:] / 0.5)), alg.alpha, alg.beta)
    torch.testing.assert_close(per_sample, expected * torch.tensor([1.0, 0.0, 1.0, 1.0]))


def test_entropy_term_on_the_weak_view_and_repredictions_from_ema_by_default(tmp_path):
    alg, _ = build_alg(short_argv(tmp_path, "--algorithm", "r2d2_strong"))
    assert alg.args.r2d2_repredict_from == "ema"
    assert get_config(short_argv(tmp_path)).r2d2_repredict_from == "network"
    logits, targets = torch.randn(4, 10), torch.randn(4, 10)
    logits_w = torch.randn(3, 10)
    per_sample = alg.per_sample_loss(logits, targets, num_lb=1, logits_w=logits_w)
    kl = d2_loss(logits, targets, alg.alpha, 0.0)
    entropy = d2_loss(torch.cat((logits[:1], logits_w)), targets, 0.0, alg.beta)
    torch.testing.assert_close(per_sample, kl + entropy)


@pytest.mark.parametrize("option, value", [("r2d2_strong_T", "0"), ("r2d2_strong_threshold", "1.5"),
                                           ("r2d2_strong_entropy_view", "both")])
def test_bad_variant_options_are_refused(tmp_path, option, value):
    with pytest.raises(ConfigError, match=option):
        get_config(short_argv(tmp_path, "--algorithm", "r2d2_strong", f"--{option}", value))
