"""Every shipped config parses through the launcher's USB parser and its r2d2 options validate;
a key or option that nothing declares is refused with the nearest declared one."""
from __future__ import annotations

import re

import pytest
import torch

from r2d2_plugin import ConfigError
from r2d2_plugin.tools import make_configs
from r2d2_plugin.cli.config import get_config
from r2d2_plugin.core.schedule import StageSchedule
from conftest import DIGITS_CONFIG, ROOT

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("benchmark, count", [("classic_cv", 12), ("usb_cv", 9)])
def test_usb_setting_configs_are_what_the_generator_writes(tmp_path, benchmark, count):
    make_configs.main(["--out", str(tmp_path)])
    made = {p.name: p.read_text() for p in (tmp_path / benchmark).glob("*.yaml")}
    shipped = {p.name: p.read_text() for p in (ROOT / "configs" / benchmark).glob("*.yaml")}
    assert len(made) == count and made == shipped
    for text in made.values():
        keys = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith("#")]
        assert "clip_grad" in keys and "clip" not in keys


def test_usb_cv_keeps_usbs_vit_setting_and_scales_the_reference_lrs():
    args = get_config(["--c", str(ROOT / "configs" / "usb_cv" / "r2d2_stl10_40_0.yaml")])
    assert (args.net, args.optim, args.lr, args.batch_size, args.uratio) == ("vit_base_patch16_96", "AdamW",
                                                                           0.0001, 8, 1)
    schedule = StageSchedule.from_args(args)
    assert schedule.lr_d2 == args.lr and schedule.lr_r2 == [0.0001, 6.67e-05, 3.33e-05, 3.33e-06]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_and_validates(path):
    args = get_config(["--c", str(path)])
    assert args.algorithm in ("r2d2", "r2d2_strong")
    schedule = StageSchedule.from_args(args)
    assert sum((schedule.warmup_iter, schedule.d2_iter, schedule.r2_iter,
                schedule.finetune_iter)) == args.num_train_iter
    r2_repredictions = [it for it in schedule.repredict_iters
                        if schedule.stage(it) == 3]
    assert len(r2_repredictions) == 4
    # The reference's per-sample store step λα/B (λ 4000, α 0.1, B 512) in every config; α is the
    # paper's 0.1 unless the strong view trains on hard pseudo-labels at FixMatch's weight 1.
    batch = args.batch_size * (1 + args.uratio)
    assert args.r2d2_lambda * args.r2d2_alpha / batch == pytest.approx(4000 * 0.1 / 512)
    assert args.r2d2_beta == 0.03
    hard = getattr(args, "r2d2_strong_target_loss", "d2") == "hard"
    assert args.r2d2_alpha == (1.0 if hard else 0.1)


def test_cifar10_4000_follows_the_reference_proportions():
    args = get_config(["--c", str(ROOT / "configs" / "classic_cv" / "r2d2_cifar10_4000_0.yaml")])
    schedule = StageSchedule.from_args(args)
    lengths = (schedule.warmup_iter, schedule.d2_iter, schedule.r2_iter, schedule.finetune_iter)
    assert [round(n / args.num_train_iter * 950) for n in lengths] == [300, 300, 300, 50]
    assert args.r2d2_lambda == 4000.0 and args.net == "wrn_28_2" and args.num_labels == 4000
    assert [schedule.lr(it) for it in schedule.repredict_iters[1:5]] == [0.12, 0.08, 0.04, 0.004]


def test_d2_without_r2_keeps_the_lr_steps_and_drops_only_stage_3_repredictions():
    config = str(ROOT / "configs" / "r2d2_digits_40.yaml")
    with_r2 = StageSchedule.from_args(get_config(["--c", config]))
    without = StageSchedule.from_args(get_config(["--c", config, "--r2d2_use_r2", "False"]))
    assert with_r2.repredict_iters == [600, 1200, 1350, 1500, 1650, 1800]
    assert without.repredict_iters == [600, 1800]
    assert [without.lr(it) for it in range(1900)] == [with_r2.lr(it) for it in range(1900)]


def test_a_run_without_fine_tune_ends_at_lr_zero():
    config = str(ROOT / "configs" / "r2d2_digits_40.yaml")
    schedule = StageSchedule.from_args(get_config(
        ["--c", config, "--r2d2_finetune_iter", "0", "--r2d2_r2_iter", "700"]))
    assert schedule.repredict_iters == [600, 1200, 1350, 1500, 1650]
    assert schedule.lr(1899) == 0.0005 and schedule.lr(1900) == 0.0


def test_imagenet_10pct_config_is_usbs_imagenet_with_resnet18():
    from semilearn.core.utils import get_net_builder

    args = get_config(["--c", str(ROOT / "configs" / "imagenet" / "r2d2_imagenet_10pct.yaml")])
    assert (args.dataset, args.num_classes, args.net, args.net_from_name) == ("imagenet", 1000, "resnet18", False)
    assert round(args.num_labels / 1_281_167, 3) == 0.1
    assert args.num_eval_iter % (args.num_train_iter // args.epoch) == 0
    net = get_net_builder(args.net, args.net_from_name)(num_classes=args.num_classes)
    assert sum(p.numel() for p in net.parameters()) == 11_689_512  # torchvision's resnet18 count
    out = net(torch.zeros(2, 3, 64, 64))
    assert out["logits"].shape == (2, 1000) and out["feat"].shape == (2, 512)


def with_lines(tmp_path, *lines: str) -> str:
    """configs/r2d2_digits_40.yaml with ``lines`` appended, written under ``tmp_path``."""
    path = tmp_path / "config.yaml"
    path.write_text(open(DIGITS_CONFIG).read() + "\n".join(lines) + "\n")
    return str(path)


def test_a_misspelt_key_in_the_yaml_stops_with_the_nearest_option(tmp_path):
    with pytest.raises(ConfigError, match=r"'r2d2_aplha' in .*config.yaml.*did you mean r2d2_alpha\?"):
        get_config(["--c", with_lines(tmp_path, "r2d2_aplha: 0.3")])


@pytest.mark.parametrize("argv, nearest", [
    (["--r2d2_aplha", "0.3"], "r2d2_alpha"),
    (["--r2d2_aplha=0.3"], "r2d2_alpha"),
    (["--num_train", "300"], "num_train_iter"),  # no abbreviations: a prefix is not an option
    (["--world-size", "2"], "world_size"),  # USB's train.py spelling; the launcher's is world_size
])
def test_a_misspelt_option_on_the_command_line_stops_with_the_nearest_option(argv, nearest):
    with pytest.raises(ConfigError, match=rf"on the command line.*did you mean {nearest}\?"):
        get_config(["--c", DIGITS_CONFIG, *argv])


@pytest.mark.parametrize("argv, problem, fix", [
    (["--r2d2_lr_r2", "0.1", "0.05"], "'0.05' on the command line is a second value after --r2d2_lr_r2",
     "--r2d2_lr_r2 0.1,0.05"),
    (["--seed", "1", "-2"], "'-2' on the command line is a second value after --seed", "remove it"),
])
def test_a_second_value_after_an_option_names_the_option(argv, problem, fix):
    """argparse leaves it over as a bare value; the error names the option it follows."""
    with pytest.raises(ConfigError, match=re.escape(problem) + ".*" + re.escape(fix)):
        get_config(["--c", DIGITS_CONFIG, *argv])


def test_an_option_of_another_algorithm_is_refused_on_the_command_line():
    with pytest.raises(ConfigError, match=r"'r2d2_alpha' on the command line is an option of r2d2, r2d2_strong"):
        get_config(["--c", DIGITS_CONFIG, "--algorithm", "fixmatch", "--r2d2_alpha", "0.3"])
    with pytest.raises(ConfigError, match=r"'r2d2_strong_T' on the command line is an option of r2d2_strong,"
                                          r" not of this run's algorithm. Fix: set algorithm to it"):
        get_config(["--c", DIGITS_CONFIG, "--r2d2_strong_T", "0.5"])


def with_values(tmp_path, *lines: str) -> str:
    """configs/r2d2_digits_40.yaml with the keys of ``lines`` set by them instead."""
    keys = tuple(line.split(":")[0] + ":" for line in lines)
    kept = [line for line in open(DIGITS_CONFIG).read().splitlines() if not line.startswith(keys)]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join([*kept, *lines]) + "\n")
    return str(path)


@pytest.mark.parametrize("text, problem", [
    ("- a list\n- not options\n", "holds a list, not key: value pairs"),
    ("seed: 0\nseed: 1\n", "is not valid YAML"),
    ("seed: 0\n\tr2d2_beta: 0.1\n", "is not valid YAML"),
])
def test_a_yaml_that_is_not_key_value_pairs_is_refused(tmp_path, text, problem):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=problem):
        get_config(["--c", str(tmp_path / "config.yaml")])


@pytest.mark.parametrize("line, problem", [
    ("r2d2_beta: [0.1]", r"r2d2_beta: \[0.1\] in .* is not a number"),
    ("r2d2_beta: true", "r2d2_beta: True in .* is not a number"),
    ("num_log_iter: 8.5", "num_log_iter: 8.5 in .* is not an integer"),
])
def test_a_yaml_value_that_is_not_the_options_number_is_refused(tmp_path, line, problem):
    with pytest.raises(ConfigError, match=problem):
        get_config(["--c", with_values(tmp_path, line)])


def test_an_integral_float_and_none_in_the_yaml_are_read_as_the_option_wants(tmp_path):
    """argparse converts only the command line's strings: a YAML 10.0 for an int option becomes
    10, and USB's spelling of unset, None, reads as unset."""
    args = get_config(["--c", with_values(tmp_path, "num_log_iter: 10.0", "r2d2_lambda: None")])
    assert args.num_log_iter == 10 and type(args.num_log_iter) is int and args.r2d2_lambda is None


@pytest.mark.parametrize("argv, listed, absent", [
    (["--c", DIGITS_CONFIG], "--r2d2_alpha", "--p_cutoff"),
    (["--c", DIGITS_CONFIG, "--algorithm", "fixmatch"], "--p_cutoff", "--r2d2_alpha"),
])
def test_help_lists_the_options_of_the_configs_algorithm(argv, listed, absent, capsys):
    with pytest.raises(SystemExit) as stop:
        get_config([*argv, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "--num_train_iter" in out and listed in out and absent not in out


@pytest.mark.parametrize("choice", [["--algorithm", "fixmatch"], ["--algorithm=fixmatch"]])
def test_a_baseline_reads_an_r2d2_yaml_with_its_own_options(choice):
    """The bench runs USB's baselines from an r2d2 YAML: the file's r2d2 keys belong to the
    algorithm it names, and FixMatch's own options take USB's defaults (either argparse form)."""
    args = get_config(["--c", DIGITS_CONFIG, *choice, "--p_cutoff", "0.9"])
    assert (args.algorithm, args.p_cutoff, args.T) == ("fixmatch", 0.9, 0.5)


def test_usbs_unread_clip_key_is_taken_at_zero_and_refused_otherwise(tmp_path):
    """USB's own configs all write ``clip: 0.0``, which USB 0.3.2 never reads (it clips with
    ``clip_grad``)."""
    assert get_config(["--c", with_lines(tmp_path, "clip: 0.0")]).clip_grad == 0.0
    with pytest.raises(ConfigError, match="clip_grad: 1.0"):
        get_config(["--c", with_lines(tmp_path, "clip: 1.0")])
