"""R2-D2's formulas written out here, from the paper and the reference code (R2D2.pytorch), and
checked against what real USB-built algorithms compute: the D2 loss and its gradient, the store
step, the learning rate the optimizer applies, the stage-1 and stage-4 losses, the default λ,
D2 without R2, ``npz`` without eval arrays, and the store-agreement check under DDP. No
expected value here comes from the plugin's own loss, target, schedule or store code.

Notation: z the network's logits, f = softmax(z); ỹ a store entry, q = softmax(ỹ); B the batch
(labeled + unlabeled samples); per sample, L = α·KL(f ‖ q) + β·H(f) with the network's
distribution first in the KL; labeled samples' fixed targets have logit 10 at the true class.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from r2d2_plugin import ConfigError
from r2d2_plugin.core.collectives import check_stores_agree
from r2d2_plugin.core.store import PseudoLabelStore
from r2d2_plugin.usb.datasets import npz_num_labels
from conftest import DIGITS_CONFIG, R2D2_SHORT, SHORT, build_alg

ALPHA, BETA, LABELED_LOGIT, CLASSES = 0.2, 0.05, 10.0, 10
# The lrs of the training runs (not the config's, so that nothing is read from it).
LR, LR_D2, LR_R2, LR_FINETUNE = 0.04, 0.02, (0.02, 0.01, 0.005, 0.001), 0.004


def argv(tmp_path: Path, *extra: str, config: str = DIGITS_CONFIG, lam: bool = True) -> List[str]:
    """A 40-iteration digits run (conftest's SHORT and R2D2_SHORT: batch 8 labeled + 16 unlabeled;
    warm-up 0-7, D2 8-15, R2 16-31 in periods of 4, fine-tune 32-39) with α, β and the lrs above;
    without ``r2d2_lambda`` when ``lam`` is False."""
    stages = [t for name, value in zip(R2D2_SHORT[::2], R2D2_SHORT[1::2])
              if lam or name != "--r2d2_lambda" for t in (name, value)]
    return ["--c", config, "--save_dir", str(tmp_path), "--save_name", "run", *SHORT, *stages,
            "--r2d2_alpha", str(ALPHA), "--r2d2_beta", str(BETA), "--lr", str(LR),
            "--r2d2_lr_d2", str(LR_D2), "--r2d2_lr_r2", ",".join(map(str, LR_R2)),
            "--r2d2_lr_finetune", str(LR_FINETUNE), *extra]


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    return z - z.logsumexp(dim=-1, keepdim=True)


def kl(z: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """KL(f ‖ q) per sample, f = softmax(z), q = softmax(target_logits)."""
    log_f = log_softmax(z)
    return (log_f.exp() * (log_f - log_softmax(target_logits))).sum(dim=-1)


def entropy(z: torch.Tensor) -> torch.Tensor:
    log_f = log_softmax(z)
    return -(log_f.exp() * log_f).sum(dim=-1)


def kl_grad(z: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """∂KL(f ‖ q)/∂z. With h = log f − log q, ∂KL/∂f_j = h_j + 1 and ∂f_j/∂z_k = f_j(δ_jk − f_k),
    so ∂KL/∂z_k = f_k (h_k − <f, h>) (the +1 cancels since Σ f = 1)."""
    log_f = log_softmax(z)
    f, h = log_f.exp(), log_f - log_softmax(target_logits)
    return f * (h - (f * h).sum(dim=-1, keepdim=True))


def entropy_grad(z: torch.Tensor) -> torch.Tensor:
    """∂H(f)/∂z_k = −f_k (log f_k − <f, log f>), the same chain rule with ∂H/∂f_j = −(log f_j + 1)."""
    log_f = log_softmax(z)
    f = log_f.exp()
    return -f * (log_f - (f * log_f).sum(dim=-1, keepdim=True))


def labeled_targets(y: torch.Tensor) -> torch.Tensor:
    return LABELED_LOGIT * F.one_hot(y, CLASSES).float()


def cross_entropy(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−log softmax(z)_y per sample."""
    return -log_softmax(z).gather(1, y[:, None])[:, 0]


def store_step(before: torch.Tensor, idx: torch.Tensor, z_weak: torch.Tensor, lam: float,
               batch: int) -> torch.Tensor:
    """D2's store step: ∂(Σ_i L_i / B)/∂ỹ_i = (α/B)(softmax(ỹ_i) − f_i), so
    ỹ_i ← ỹ_i − λ (α/B)(softmax(ỹ_i) − f_i), f_i from the weak view; an index twice in a batch
    takes the step of its last occurrence (the reference's store assignment)."""
    after = before.clone()
    for i, z in zip(idx.tolist(), z_weak):
        after[i] = before[i] - lam * ALPHA / batch * (torch.softmax(before[i], -1) - torch.softmax(z, -1))
    return after


@contextlib.contextmanager
def network_logits(model: torch.nn.Module) -> Iterator[List[torch.Tensor]]:
    """The logits of every forward of ``model`` inside the block, gradients retained."""
    seen: List[torch.Tensor] = []

    def hook(module, inputs, output):
        if output["logits"].requires_grad:
            output["logits"].retain_grad()
        seen.append(output["logits"])

    handle = model.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def first_batch(alg, scale: float = 3.0) -> Dict[str, torch.Tensor]:
    """The first training batch of ``alg`` as USB's loop hands it to ``train_step``, after
    filling the store with random logits (a pseudo-label far from the network's prediction)."""
    store = torch.randn(alg.store.logits.shape, generator=torch.Generator().manual_seed(0)) * scale
    alg.store.write(torch.arange(len(store)), store)
    data_lb, data_ulb = next(zip(alg.loader_dict["train_lb"], alg.loader_dict["train_ulb"]))
    batch = alg.process_batch(**data_lb, **data_ulb)
    assert len(set(batch["idx_ulb"].tolist())) == len(batch["idx_ulb"])
    return batch


@pytest.mark.parametrize("extra, batch, lam", [
    (["--r2d2_lambda", "300"], 24, 300.0),
    # r2d2_lambda unset (the YAML's line removed too): the reference's λ = 4000 at a batch of 512
    # keeps its per-sample step λα/B, so λ = 4000·B/512, here B = 4·(1 + 3) = 16.
    (["--batch_size", "4", "--uratio", "3"], 16, 4000 * 16 / 512),
], ids=["lambda_given", "lambda_default"])
def test_d2_step_loss_gradient_and_store_step(tmp_path, extra, batch, lam):
    config = tmp_path / "no_lambda.yaml"
    config.write_text("".join(line for line in open(DIGITS_CONFIG).readlines()
                              if not line.startswith("r2d2_lambda:")))
    alg, _ = build_alg(argv(tmp_path, "--r2d2_warmup_iter", "0", "--r2d2_d2_iter", "16", *extra,
                            config=str(config), lam=False))
    data = first_batch(alg)
    y, idx = data["y_lb"], data["idx_ulb"]
    num_lb = len(y)
    assert num_lb + len(idx) == batch
    before = alg.store.logits.clone()
    with network_logits(alg.model) as seen:
        out_dict, log_dict = alg.train_step(**data)
    (z,) = seen
    assert log_dict["r2d2/stage"] == 2 and z.shape == (batch, CLASSES)

    targets = torch.cat((labeled_targets(y), before[idx]))
    per_sample = ALPHA * kl(z.detach(), targets) + BETA * entropy(z.detach())
    assert log_dict["train/sup_loss"] == pytest.approx(per_sample[:num_lb].sum().item() / batch, rel=1e-5)
    assert log_dict["train/unsup_loss"] == pytest.approx(per_sample[num_lb:].sum().item() / batch, rel=1e-5)
    assert log_dict["train/total_loss"] == pytest.approx(per_sample.sum().item() / batch, rel=1e-5)

    # The network's gradient, through USB's loss: (α ∂KL/∂z + β ∂H/∂z) / B for every sample; the
    # unlabeled rows are the unlabeled term's, which must reach the network.
    out_dict["loss"].backward()
    expected = (ALPHA * kl_grad(z.detach(), targets) + BETA * entropy_grad(z.detach())) / batch
    torch.testing.assert_close(z.grad, expected, rtol=1e-4, atol=1e-8)
    assert z.grad[num_lb:].abs().max() > 1e-3

    torch.testing.assert_close(alg.store.logits, store_step(before, idx, z.detach()[num_lb:], lam, batch),
                               rtol=1e-5, atol=1e-6)


def test_labeled_ce_step(tmp_path):
    """``r2d2_labeled_loss: ce``: after the warm-up the labeled samples train with USB's
    supervised loss, cross-entropy toward their labels averaged over the labeled samples, and
    the unlabeled ones with the D2 loss summed over them and divided by the whole batch B."""
    alg, _ = build_alg(argv(tmp_path, "--r2d2_warmup_iter", "0", "--r2d2_d2_iter", "16",
                            "--r2d2_labeled_loss", "ce"))
    data = first_batch(alg)
    y, idx = data["y_lb"], data["idx_ulb"]
    num_lb, batch = len(y), len(y) + len(idx)
    before = alg.store.logits.clone()
    with network_logits(alg.model) as seen:
        out_dict, log_dict = alg.train_step(**data)
    (z,) = seen
    lb, ulb = z.detach().split([num_lb, len(idx)])
    assert log_dict["r2d2/stage"] == 2
    assert log_dict["train/sup_loss"] == pytest.approx(cross_entropy(lb, y).mean().item(), rel=1e-5)
    unsup = (ALPHA * kl(ulb, before[idx]) + BETA * entropy(ulb)).sum() / batch
    assert log_dict["train/unsup_loss"] == pytest.approx(unsup.item(), rel=1e-5)

    # ∂CE/∂z = softmax(z) − onehot(y), over the labeled samples' mean.
    out_dict["loss"].backward()
    grad_lb, grad_ulb = z.grad.split([num_lb, len(idx)])
    torch.testing.assert_close(grad_lb, (torch.softmax(lb, -1) - F.one_hot(y, CLASSES)) / num_lb,
                               rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(grad_ulb, (ALPHA * kl_grad(ulb, before[idx]) + BETA * entropy_grad(ulb))
                               / batch, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(alg.store.logits, store_step(before, idx, ulb, 187.5, batch),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("extra", [
    [],  # the variant's defaults: T 1, no threshold, entropy term on the weak view
    ["--r2d2_strong_T", "0.5", "--r2d2_strong_threshold", "0.9", "--r2d2_strong_entropy_view", "strong"],
    ["--r2d2_strong_T", "0.5", "--r2d2_strong_threshold", "0.9", "--r2d2_strong_target_loss", "hard"],
], ids=["defaults", "T_threshold_strong_entropy", "hard_target"])
def test_r2d2_strong_step(tmp_path, extra):
    """``r2d2_strong``: the KL on the strong view toward softmax(ỹ / T) (or the cross-entropy to
    argmax ỹ), unlabeled samples whose top target probability is below the threshold left out,
    the entropy on the chosen view; the store descends from the weak view."""
    alg, _ = build_alg(argv(tmp_path, "--algorithm", "r2d2_strong", "--r2d2_warmup_iter", "0",
                            "--r2d2_d2_iter", "16", *extra))
    options = dict(zip(extra[::2], extra[1::2]))
    temperature = float(options.get("--r2d2_strong_T", 1.0))
    threshold = float(options.get("--r2d2_strong_threshold", 0.0))
    data = first_batch(alg)
    y, idx = data["y_lb"], data["idx_ulb"]
    num_lb, num_ulb = len(y), len(idx)
    batch = num_lb + num_ulb
    before = alg.store.logits.clone()
    with network_logits(alg.model) as seen:
        out_dict, log_dict = alg.train_step(**data)
    (z,) = seen
    lb, weak, strong = z.detach().split([num_lb, num_ulb, num_ulb])

    target = before[idx] / temperature
    kept = (torch.softmax(target, -1).max(-1).values >= threshold).float()
    if threshold:
        assert 0 < kept.sum() < num_ulb  # both cases occur in this batch
    entropy_view = strong if "strong" in extra else weak
    hard = options.get("--r2d2_strong_target_loss") == "hard"
    if hard:
        pseudo_label = F.one_hot(target.argmax(-1), CLASSES).float()
        target_term = -(pseudo_label * F.log_softmax(strong, -1)).sum(-1)
        target_grad = torch.softmax(strong, -1) - pseudo_label
    else:
        target_term, target_grad = kl(strong, target), kl_grad(strong, target)
    sup = (ALPHA * kl(lb, labeled_targets(y)) + BETA * entropy(lb)).sum() / batch
    unsup = ((ALPHA * target_term + BETA * entropy(entropy_view)) * kept).sum() / batch
    assert log_dict["train/sup_loss"] == pytest.approx(sup.item(), rel=1e-5)
    assert log_dict["train/unsup_loss"] == pytest.approx(unsup.item(), rel=1e-5)

    out_dict["loss"].backward()
    grad_lb, grad_weak, grad_strong = z.grad.split([num_lb, num_ulb, num_ulb])
    torch.testing.assert_close(grad_lb, (ALPHA * kl_grad(lb, labeled_targets(y)) + BETA * entropy_grad(lb))
                               / batch, rtol=1e-4, atol=1e-8)
    expected_strong = ALPHA * target_grad * kept[:, None] / batch
    expected_weak = torch.zeros_like(weak)
    if entropy_view is strong:
        expected_strong += BETA * entropy_grad(strong) * kept[:, None] / batch
    else:
        expected_weak = BETA * entropy_grad(weak) * kept[:, None] / batch
    torch.testing.assert_close(grad_strong, expected_strong, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(grad_weak, expected_weak, rtol=1e-4, atol=1e-8)

    torch.testing.assert_close(alg.store.logits, store_step(before, idx, weak, 187.5, batch),
                               rtol=1e-5, atol=1e-6)


def written_lr(it: int) -> float:
    """The network lr at iteration ``it`` of the 40-iteration run: the reference's warm-up cosine
    (reaching 0 at 350/300 of the warm-up), constant in D2, one step per R2 period, cosine from
    the fine-tune lr to 0."""
    if it < 8:
        return LR * 0.5 * (1 + math.cos(math.pi * it / (8 * 350 / 300)))
    if it < 16:
        return LR_D2
    if it < 32:
        return LR_R2[(it - 16) // 4]
    return LR_FINETUNE * 0.5 * (1 + math.cos(math.pi * (it - 32) / 8))


@pytest.mark.parametrize("use_r2, repredicted", [("True", [8, 16, 20, 24, 28, 32]), ("False", [8, 32])])
def test_training_run_follows_the_written_schedule_losses_and_store_steps(tmp_path, use_r2, repredicted):
    """A whole run through USB's ``alg.train()``: at every iteration, the lr the optimizer
    applies, the loss of the stage (stage 1: labeled cross-entropy; 2-3: the D2 loss; 4:
    cross-entropy toward argmax ỹ, labeled samples toward their labels), and the store: moved
    only by D2 steps in stages 2-3 and overwritten by R2 only before ``repredicted`` (with
    ``r2d2_use_r2: False``, only at the start of D2 and of the fine-tune)."""
    alg, _ = build_alg(argv(tmp_path, "--r2d2_use_r2", use_r2, "--num_eval_iter", "40"))
    lrs: Dict[int, List[float]] = {}
    alg.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: lrs.__setitem__(alg.it, [g["lr"] for g in optimizer.param_groups]))
    steps: Dict[int, dict] = {}
    train_step = alg.train_step

    def recording_train_step(x_lb, y_lb, idx_ulb, x_ulb_w):
        before = alg.store.logits.clone()
        with network_logits(alg.model) as seen:
            out = train_step(x_lb=x_lb, y_lb=y_lb, idx_ulb=idx_ulb, x_ulb_w=x_ulb_w)
        steps[alg.it] = dict(z=seen[0].detach(), y=y_lb, idx=idx_ulb, before=before,
                             after=alg.store.logits.clone(), log=out[1])
        return out

    alg.train_step = recording_train_step
    alg.train()

    assert sorted(steps) == sorted(lrs) == list(range(40))
    for it in range(40):
        assert lrs[it] == pytest.approx([written_lr(it)] * len(lrs[it]), rel=1e-9, abs=1e-15), it
    assert lrs[39][0] > 0 and lrs[32][0] == pytest.approx(LR_FINETUNE)

    for it, step in steps.items():
        z, y, idx, log = step["z"], step["y"], step["idx"], step["log"]
        num_lb, batch = len(y), len(y) + len(idx)
        if it < 8:
            assert z.shape[0] == num_lb
            assert log["train/total_loss"] == pytest.approx(cross_entropy(z, y).mean().item(), rel=1e-5)
            assert log["train/unsup_loss"] == 0
        elif it < 32:
            targets = torch.cat((labeled_targets(y), step["before"][idx]))
            per_sample = ALPHA * kl(z, targets) + BETA * entropy(z)
            assert log["train/total_loss"] == pytest.approx(per_sample.sum().item() / batch, rel=1e-5), it
        else:
            per_sample = cross_entropy(z, torch.cat((y, step["before"][idx].argmax(-1))))
            assert log["train/sup_loss"] == pytest.approx(per_sample[:num_lb].sum().item() / batch, rel=1e-5)
            assert log["train/unsup_loss"] == pytest.approx(per_sample[num_lb:].sum().item() / batch, rel=1e-5)
        if 8 <= it < 32:
            torch.testing.assert_close(step["after"], store_step(step["before"], idx, z[num_lb:], 187.5, batch),
                                       rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(step["after"], step["before"]), it

    overwritten = [it for it in range(1, 40) if not torch.equal(steps[it]["before"], steps[it - 1]["after"])]
    assert overwritten == repredicted


def test_npz_without_eval_arrays_holds_out_a_fifth_of_each_labeled_class(tmp_path):
    """A user's ``npz`` with only ``images`` and ``labels`` (-1: unlabeled): a fifth of each
    labeled class (rounded down) is held out as the eval set, out of both training sets; the
    rest trains a few iterations."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    count = 600
    # 16x16 grey images, each carrying its index in its first two pixels.
    images = np.round(digits.images[:count] * 255 / 16).astype(np.uint8).repeat(2, axis=1).repeat(2, axis=2)
    images[:, 0, 0], images[:, 0, 1] = np.arange(count) // 256, np.arange(count) % 256

    def ids(served: np.ndarray) -> List[int]:
        return (served[:, 0, 0, 0].astype(int) * 256 + served[:, 0, 1, 0]).tolist()

    labels = np.full(count, -1)
    per_class = [6 + c for c in range(CLASSES)]  # 6..15 labels: 1, 1, 1, 1, 2, ... held out
    for c, n in enumerate(per_class):
        labels[np.flatnonzero(digits.target[:count] == c)[:n]] = c
    path = tmp_path / "data.npz"
    np.savez(path, images=images, labels=labels)
    labeled = set(np.flatnonzero(labels >= 0).tolist())

    alg, _ = build_alg(["--c", DIGITS_CONFIG, "--save_dir", str(tmp_path), "--save_name", "npz",
                        "--dataset", "npz", "--data_dir", str(path), "--num_train_iter", "8",
                        "--epoch", "1", "--num_eval_iter", "8", "--num_log_iter", "4",
                        "--batch_size", "8", "--uratio", "2", "--r2d2_warmup_iter", "2",
                        "--r2d2_d2_iter", "2", "--r2d2_r2_iter", "2", "--r2d2_repredict_period", "1",
                        "--r2d2_lr_r2", "0.01,0.005", "--r2d2_finetune_iter", "2"])
    dsets = alg.dataset_dict
    held = set(ids(dsets["eval"].data))
    assert np.bincount(dsets["eval"].targets, minlength=CLASSES).tolist() == [n // 5 for n in per_class]
    assert held <= labeled and all(labels[i] == t for i, t in zip(ids(dsets["eval"].data), dsets["eval"].targets))
    assert sorted(ids(dsets["train_lb"].data)) == sorted(labeled - held)
    # include_lb_to_ulb (USB's default): the unlabeled set is every training image.
    assert sorted(ids(dsets["train_ulb"].data)) == sorted(set(range(count)) - held)
    assert alg.args.num_labels == len(labeled - held) == sum(n - n // 5 for n in per_class)
    assert npz_num_labels(str(path)) == alg.args.num_labels  # what bench checks before a suite
    alg.train()
    assert alg.it == 8 and math.isfinite(alg.log_dict["train/total_loss"])
    assert 0 <= alg.log_dict["eval/top-1-acc"] <= 1


def test_npz_without_eval_arrays_and_under_5_labels_a_class_is_refused(tmp_path):
    """4 labels a class: a fifth, rounded down, holds out nothing; the error names the fix."""
    images, labels = np.zeros((100, 8, 8), np.uint8), np.full(100, -1)
    labels[:4 * CLASSES] = np.repeat(np.arange(CLASSES), 4)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    with pytest.raises(ConfigError, match="fewer than 5 labeled images in every class") as err:
        build_alg(["--c", DIGITS_CONFIG, "--save_dir", str(tmp_path), "--dataset", "npz",
                   "--data_dir", str(tmp_path / "data.npz")])
    assert "eval_images / eval_labels" in str(err.value)


@pytest.mark.parametrize("case, problem", [
    ("150 labels for 200 images", r"images has shape \(200, 8, 8\) and labels \(150,\)"),
    ("2-D labels", r"labels \(200, 1\)"),
    ("eval pair of other lengths", r"eval_images has shape \(20, 8, 8\) and eval_labels \(10,\)"),
    ("an eval label of -1", "an eval label below 0"),
    ("nothing labeled", "no labeled image"),
    ("a text file", "is not a .npz file of arrays"),
])
def test_an_npz_off_the_format_is_refused(tmp_path, case, problem):
    images, labels = np.zeros((200, 8, 8), np.uint8), np.repeat(np.arange(CLASSES), 20)
    arrays = {"images": images, "labels": labels, "eval_images": images[:20], "eval_labels": labels[:20]}
    arrays.update({"150 labels for 200 images": {"labels": labels[:150]},
                   "2-D labels": {"labels": labels[:, None]},
                   "eval pair of other lengths": {"eval_labels": labels[:10]},
                   "an eval label of -1": {"eval_labels": np.full(20, -1)},
                   "nothing labeled": {"labels": np.full(200, -1)}}.get(case, {}))
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    if case == "a text file":
        path.write_text("images,labels\n")
    with pytest.raises(ConfigError, match=problem):
        build_alg(["--c", DIGITS_CONFIG, "--save_dir", str(tmp_path), "--dataset", "npz", "--data_dir", str(path)])


@pytest.mark.parametrize("case, problem", [
    ("img_size 8 for 16x16 images", r"img_size=8 but '.*data.npz' serves images of 16x16 pixels.*set img_size: 16"),
    ("eval images of another size", r"holds images of \(12, 12\) and \(16, 16\) pixels.*square images of one size"),
    ("images 16x12", r"holds images of \(16, 12\) pixels"),
])
def test_npz_images_must_match_img_size(tmp_path, case, problem):
    """npz data is served unresized: its images square, of one size, and img_size that size."""
    images, labels = np.zeros((100, 16, 16), np.uint8), np.repeat(np.arange(CLASSES), 10)
    eval_images = {"eval images of another size": np.zeros((20, 12, 12), np.uint8)}.get(case, images[:20])
    if case == "images 16x12":
        images, eval_images = images[:, :, :12], eval_images[:, :, :12]
    np.savez(tmp_path / "data.npz", images=images, labels=labels, eval_images=eval_images, eval_labels=labels[:20])
    run = ["--c", DIGITS_CONFIG, "--save_dir", str(tmp_path), "--dataset", "npz", "--data_dir", str(tmp_path / "data.npz")]
    with pytest.raises(ConfigError, match=problem):
        build_alg([*run, "--img_size", "8" if case.startswith("img_size") else "16"])


def test_digits_img_size_must_be_its_own(tmp_path):
    with pytest.raises(ConfigError, match=r"img_size=28 but 'digits' serves images of 16x16 pixels.*set img_size: 16"):
        build_alg(["--c", DIGITS_CONFIG, "--save_dir", str(tmp_path), "--img_size", "28"])


@pytest.mark.parametrize("only", ["eval_images", "eval_labels"])
def test_npz_with_one_of_the_eval_pair_is_refused(tmp_path, only):
    images, labels = np.zeros((100, 8, 8), np.uint8), np.repeat(np.arange(CLASSES), 10)
    np.savez(tmp_path / "data.npz", images=images, labels=labels, **{only: (images if only == "eval_images" else labels)[:10]})
    with pytest.raises(ConfigError, match="has only one of eval_images and eval_labels") as err:
        build_alg(["--c", DIGITS_CONFIG, "--save_dir", str(tmp_path), "--dataset", "npz",
                   "--data_dir", str(tmp_path / "data.npz")])
    assert "save both" in str(err.value)


def agreement_worker(rank: int, rendezvous: str, results: str) -> None:
    """One of two gloo processes: ``check_stores_agree`` on the same store everywhere, then
    after rank 1 moves one entry by 1e-4; writes what each call did."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        store = PseudoLabelStore(50, CLASSES, torch.zeros(50, dtype=torch.long))
        store.write(torch.arange(50), torch.randn(50, CLASSES, generator=torch.Generator().manual_seed(0)))
        outcomes = []
        for _ in ("same", "perturbed"):
            try:
                check_stores_agree(store)
                outcomes.append("agreed")
            except RuntimeError as err:
                outcomes.append(f"raised: {err}")
            if rank == 1:
                store.write(torch.tensor([3]), store.read(torch.tensor([3])) + 1e-4)
        Path(f"{results}.{rank}").write_text("\n".join(outcomes))
    finally:
        dist.destroy_process_group()


def test_store_agreement_check_raises_when_two_gloo_processes_differ(tmp_path):
    mp.spawn(agreement_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path / "result")),
             nprocs=2, join=True)
    for rank in (0, 1):
        same, perturbed = (tmp_path / f"result.{rank}").read_text().split("\n")
        assert same == "agreed"
        assert perturbed.startswith("raised:") and "differs between processes" in perturbed, perturbed
