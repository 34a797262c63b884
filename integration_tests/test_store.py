"""PseudoLabelStore on its own: the D2 step, duplicates in a batch, checkpoint shape checks, the
low-precision and pinned storage options (and one short training with them)."""
from __future__ import annotations

import math

import pytest
import torch

from r2d2_plugin import ConfigError, PseudoLabelStore
from r2d2_plugin.core.store import STORE_DTYPES
from conftest import build_alg, short_argv


def test_descend_is_the_closed_form_step_and_a_repeated_index_takes_its_last_row():
    store = PseudoLabelStore(5, 3, torch.tensor([0, 1, 2, 0, 1]))
    store.logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    before = store.logits.clone()
    idx = torch.tensor([4, 1, 4])
    probs = torch.softmax(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    store.descend(idx, probs, step=0.5)
    for i, row in ((1, 1), (4, 2)):
        expected = before[i] - 0.5 * (torch.softmax(before[i], dim=-1) - probs[row])
        torch.testing.assert_close(store.logits[i], expected)
    assert torch.equal(store.logits[[0, 2, 3]], before[[0, 2, 3]])


def test_accuracy_needs_every_label_known_and_load_checks_the_shape():
    store = PseudoLabelStore(3, 2, torch.tensor([1, 0, 0]))
    store.logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert store.accuracy() == 2 / 3
    store.true_labels[1] = -1
    assert math.isnan(store.accuracy())
    with pytest.raises(ConfigError, match="store has shape"):
        store.load_state_dict({"logits": torch.zeros(4, 2)})


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_store_keeps_its_dtype_computes_in_fp32_and_follows_fp32(dtype):
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(10, (64,), generator=generator)
    exact = PseudoLabelStore(64, 10, labels)
    low = PseudoLabelStore(64, 10, labels, dtype=dtype, place="cpu_pinned")
    start = torch.randn(64, 10, generator=generator) * 3
    for store in (exact, low):
        store.assign(torch.arange(64), start)
    for _ in range(20):
        idx = torch.randint(64, (16,), generator=generator)
        probs = torch.softmax(torch.randn(16, 10, generator=generator) * 3, dim=-1)
        for store in (exact, low):
            store.descend(idx, probs, step=0.78)
    assert low.logits.dtype == STORE_DTYPES[dtype] and low.read(torch.arange(3)).dtype == torch.float32
    torch.testing.assert_close(low.read(torch.arange(64)), exact.logits, atol=0.1, rtol=0.02)
    assert abs(low.mean_entropy() - exact.mean_entropy()) < 0.01
    assert low.accuracy() == exact.accuracy()

    state = low.state_dict()
    assert state["logits"].dtype == STORE_DTYPES[dtype]
    again = PseudoLabelStore(64, 10, labels, dtype=dtype, place="cpu_pinned")
    again.load_state_dict(state)
    assert torch.equal(again.logits, low.logits)
    widened = PseudoLabelStore(64, 10, labels)
    widened.load_state_dict(state)
    assert widened.logits.dtype == torch.float32 and torch.equal(widened.logits, low.logits.float())


def test_store_options_are_checked():
    with pytest.raises(ConfigError, match="r2d2_store_dtype='fp8'"):
        PseudoLabelStore(3, 2, torch.zeros(3), dtype="fp8")
    with pytest.raises(ConfigError, match="r2d2_store_device='gpu'.*cpu_pinned"):
        PseudoLabelStore(3, 2, torch.zeros(3), place="gpu")


def test_r2d2_trains_with_a_bf16_store_in_pinned_memory(tmp_path):
    torch.set_num_threads(1)  # short on a busy machine too: no waiting on a second core
    alg, _ = build_alg(short_argv(tmp_path, "--r2d2_store_dtype", "bf16",
                                  "--r2d2_store_device", "cpu_pinned", "--num_train_iter", "20",
                                  "--epoch", "2", "--r2d2_warmup_iter", "4", "--r2d2_d2_iter", "4",
                                  "--r2d2_r2_iter", "8", "--r2d2_repredict_period", "2",
                                  "--r2d2_finetune_iter", "4"))
    alg.train()
    assert alg.store.logits.dtype == torch.bfloat16 and alg.repredictions == 6
    assert torch.isfinite(alg.store.logits.float()).all() and 0.0 <= alg.log_dict["eval/top-1-acc"] <= 1.0
    saved = torch.load(tmp_path / "run" / "latest_model.pth", map_location="cpu", weights_only=False)
    assert torch.equal(saved["r2d2"]["store"]["logits"], alg.store.logits)
