"""The USB patches are exactly the listed ones, and leave torch untouched outside USB's calls."""
from __future__ import annotations

import torch
import semilearn.core.algorithmbase as algorithmbase

from r2d2_plugin.usb import compat
from conftest import build_alg, short_argv


def test_cpu_patches_wrap_usb_functions_and_restore_torch(tmp_path):
    genuine = (torch.Tensor.cuda, torch.cuda.Event, torch.cuda.synchronize)
    for owner, name in compat.CUDA_ONLY:
        patched = getattr(owner, name)
        if torch.cuda.is_available():
            assert not hasattr(patched, "__wrapped_usb__")
        else:
            assert patched.__wrapped_usb__.__module__.startswith("semilearn.")
    assert algorithmbase.get_dataset.__wrapped_usb__.__module__ == "semilearn.core.utils.build"

    alg, _ = build_alg(short_argv(tmp_path, "--num_train_iter", "10", "--epoch", "1",
                                  "--r2d2_warmup_iter", "2", "--r2d2_d2_iter", "2",
                                  "--r2d2_r2_iter", "4", "--r2d2_repredict_period", "1",
                                  "--r2d2_finetune_iter", "2"))
    alg.train()
    assert (torch.Tensor.cuda, torch.cuda.Event, torch.cuda.synchronize) == genuine
    assert alg.log_dict["train/run_time"] >= 0.0 and alg.log_dict["train/prefetch_time"] >= 0.0
    assert alg.it == 10
