"""Device-independent tests on every device of this machine: the CPU, and CUDA where there is one
(skipped elsewhere). The store is placed with ``PseudoLabelStore.to(device)``; the launcher places
the model itself, on CUDA whenever there is one, so the tests that train through it are CUDA-only
here (their CPU counterparts: test_resume_and_launcher.py, test_bad_input.py, test_store.py).
``scripts/gpu_check.sh`` runs this file on a GPU machine."""
from __future__ import annotations

import pytest
import torch

from r2d2_plugin import ConfigError, PseudoLabelStore
from r2d2_plugin.cli.train import run
from r2d2_plugin.core.store import STORE_DTYPES
from conftest import build_alg, short_argv
from test_bad_input import PoisonAt
from test_resume_and_launcher import Crash, CrashAt, final_state

CUDA = torch.cuda.is_available()
NO_CUDA = "no CUDA device on this machine"
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason=NO_CUDA))]
ON_CUDA = pytest.mark.skipif(not CUDA, reason=f"{NO_CUDA}: the launcher trains on the CPU "
                             "(test_resume_and_launcher.py, test_bad_input.py)")
OPTIONS = [("fp32", "device"), ("bf16", "device"), ("fp16", "device"), ("fp32", "cpu_pinned"),
           ("bf16", "cpu_pinned")]


@pytest.mark.parametrize("device", DEVICES)
def test_descend_is_the_closed_form_step_and_a_repeated_index_takes_its_last_row(device):
    generator = torch.Generator().manual_seed(0)
    before = torch.randn(6, 4, generator=generator)
    store = PseudoLabelStore(6, 4, torch.arange(6) % 4).to(device)
    store.assign(torch.arange(6, device=device), before.to(device))
    idx = torch.randint(5, (64,), generator=generator)  # rows 0-4, each many times; row 5 never
    probs = torch.softmax(torch.randn(64, 4, generator=generator), dim=-1)
    assert set(idx.tolist()) == set(range(5))
    store.descend(idx.to(device), probs.to(device), step=0.5)
    after = store.full_logits()
    for i in range(5):
        last = int((idx == i).nonzero().max())
        expected = before[i] - 0.5 * (torch.softmax(before[i], dim=-1) - probs[last])
        torch.testing.assert_close(after[i], expected)
    assert torch.equal(after[5], before[5]) and store.logits.device.type == device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,place", OPTIONS)
def test_store_option_keeps_its_dtype_and_place_computes_in_fp32_and_follows_fp32(device, dtype, place):
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(10, (64,), generator=generator)
    exact = PseudoLabelStore(64, 10, labels)  # fp32 on the CPU: the reference
    store = PseudoLabelStore(64, 10, labels, dtype, place).to(device)
    start = torch.randn(64, 10, generator=generator) * 3
    exact.assign(torch.arange(64), start)
    store.assign(torch.arange(64, device=device), start.to(device))
    for _ in range(20):
        idx = torch.randint(64, (16,), generator=generator)
        probs = torch.softmax(torch.randn(16, 10, generator=generator) * 3, dim=-1)
        exact.descend(idx, probs, step=0.78)
        store.descend(idx.to(device), probs.to(device), step=0.78)

    assert store.logits.dtype == STORE_DTYPES[dtype]
    assert store.logits.device.type == ("cpu" if place == "cpu_pinned" else device)
    assert store.logits.is_pinned() == (place == "cpu_pinned" and CUDA)
    read = store.read(torch.arange(64, device=device))
    assert read.dtype == torch.float32 and read.device.type == device
    low = dtype != "fp32"
    torch.testing.assert_close(read.cpu(), exact.logits, **({"atol": 0.1, "rtol": 0.02} if low else {}))
    assert abs(store.mean_entropy() - exact.mean_entropy()) < (0.01 if low else 1e-4)
    assert store.accuracy() == exact.accuracy()

    again = PseudoLabelStore(64, 10, labels, dtype, place).to(device)
    again.load_state_dict(store.state_dict())
    assert torch.equal(again.logits.cpu(), store.logits.cpu())
    assert again.logits.device == store.logits.device and again.logits.is_pinned() == store.logits.is_pinned()


@pytest.mark.parametrize("device", DEVICES)
def test_a_checkpoint_store_of_another_shape_is_refused(device):
    store = PseudoLabelStore(3, 2, torch.zeros(3)).to(device)
    with pytest.raises(ConfigError, match=r"store has shape \(4, 2\), this run needs \(3, 2\)"):
        store.load_state_dict({"logits": torch.zeros(4, 2)})


def model_device(alg) -> str:
    return next(alg.model.parameters()).device.type


RESUME = {"fp32 store on the GPU": [],
          "bf16 store in pinned memory, AMP": ["--amp", "True", "--r2d2_store_dtype", "bf16",
                                               "--r2d2_store_device", "cpu_pinned"]}


@ON_CUDA
@pytest.mark.parametrize("case", list(RESUME))
def test_resume_on_cuda_matches_an_uninterrupted_run(tmp_path, case):
    options = RESUME[case]
    run(short_argv(tmp_path, *options, name="straight"))

    alg, _ = build_alg(short_argv(tmp_path, *options, name="interrupted"))
    assert model_device(alg) == "cuda"
    alg.register_hook(CrashAt(20), "CrashAt", "HIGHEST")
    with pytest.raises(Crash):
        alg.train()
    pinned = "cpu_pinned" in options
    assert alg.store.logits.is_pinned() == pinned
    assert alg.store.logits.device.type == ("cpu" if pinned else "cuda")
    latest = tmp_path / "interrupted" / "latest_model.pth"
    run(short_argv(tmp_path, *options, "--resume", "True", "--load_path", str(latest), name="interrupted"))

    model_a, ema_a, store_a = final_state(tmp_path / "straight" / "latest_model.pth")
    model_b, ema_b, store_b = final_state(latest)
    assert torch.equal(store_a, store_b)
    for name in model_a:
        assert torch.equal(model_b[name], model_a[name]), name
        assert torch.equal(ema_b[name], ema_a[name]), name


@ON_CUDA
def test_nan_loss_on_cuda_with_amp_stops_before_the_step_and_keeps_the_checkpoint(tmp_path):
    alg, _ = build_alg(short_argv(tmp_path, "--amp", "True", name="nan"))
    assert model_device(alg) == "cuda"
    alg.register_hook(PoisonAt(25), "PoisonAt", "LOWEST")
    with pytest.raises(FloatingPointError, match=r"loss is nan at iteration 25 \(stage 3\).*Fix:"):
        alg.train()
    checkpoint = torch.load(tmp_path / "nan" / "latest_model.pth", map_location="cpu", weights_only=False)
    assert checkpoint["it"] == 20
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert torch.isfinite(checkpoint["r2d2"]["store"]["logits"]).all()
