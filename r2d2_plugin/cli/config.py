"""USB's argument namespace for the launcher, built the way USB's ``train.py`` builds it
(base options, then the chosen algorithm's ``get_argument()``, each overridden by the YAML
config and then by the command line), and checked before anything is built or written. Unlike
``train.py``, which takes any YAML key, a key or option that nothing declares stops it
(``check_file_keys``)."""
from __future__ import annotations

import argparse
import difflib
import os
from typing import Any, Dict, List, Optional, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from semilearn.algorithms.utils import str2bool
from semilearn.core.utils import ALGORITHMS

from . import distributed
from ..algorithms.hooks import check_one_process
from ..algorithms.r2d2 import R2D2, check_loss_options
from ..algorithms.r2d2_strong import R2D2Strong, check_strong_options
from ..core.schedule import StageSchedule, none_or
from ..errors import ConfigError
from ..usb.datasets import (BALANCED_SPLIT_DATASETS, OFFLINE_CLASSES, OFFLINE_DATASETS,
                            USB_CV_DATASETS, VAL_SPLIT_DATASETS, check_num_classes, unknown_dataset)

USB_NLP_AUDIO_DATASETS = ("esc50", "fsdnoisy", "gtzan", "superbks", "superbsi", "urbansound8k",
                          "aclImdb", "ag_news", "amazon_review", "dbpedia", "yahoo_answers",
                          "yelp_review")


# USB's base options: name, type, default (USB train.py's defaults).
BASE_OPTIONS: List[tuple] = [
    ("save_dir", str, "./saved_models"), ("save_name", str, "fixmatch"),
    ("resume", str2bool, False), ("load_path", none_or(str), None), ("overwrite", str2bool, True),
    ("use_tensorboard", str2bool, False), ("use_wandb", str2bool, False), ("use_aim", str2bool, False),
    ("epoch", int, 1), ("num_train_iter", int, 20), ("num_warmup_iter", int, 0),
    ("num_eval_iter", int, 10), ("num_log_iter", int, 5), ("num_labels", int, 400),
    ("batch_size", int, 8), ("uratio", int, 1), ("eval_batch_size", int, 16),
    ("ema_m", float, 0.999), ("ulb_loss_ratio", float, 1.0),
    ("optim", str, "SGD"), ("lr", float, 3e-2), ("momentum", float, 0.9),
    ("weight_decay", float, 5e-4), ("layer_decay", float, 1.0),
    ("net", str, "wrn_28_2"), ("net_from_name", str2bool, False), ("use_pretrain", str2bool, False),
    ("pretrain_path", str, ""), ("algorithm", str, "fixmatch"), ("use_cat", str2bool, True),
    ("amp", str2bool, False), ("clip_grad", float, 0.0), ("imb_algorithm", none_or(str), None),
    ("data_dir", str, "./data"), ("dataset", str, "cifar10"), ("num_classes", int, 10),
    ("train_sampler", str, "RandomSampler"), ("num_workers", int, 1),
    ("include_lb_to_ulb", str2bool, True), ("lb_imb_ratio", int, 1), ("ulb_imb_ratio", int, 1),
    ("ulb_num_labels", none_or(int), None), ("img_size", int, 32), ("crop_ratio", float, 0.875),
    ("max_length", int, 512), ("max_length_seconds", float, 4.0), ("sample_rate", int, 16000),
    ("world_size", int, 1), ("rank", int, 0), ("dist_url", str, "tcp://127.0.0.1:11111"),
    ("dist_backend", str, "nccl"), ("seed", int, 1), ("gpu", none_or(int), None),
    ("multiprocessing_distributed", str2bool, False),
]
# The plugin's own base option: where ``digits`` and ``fashionmnist`` evaluate. "test": their
# fixed eval / test set; "val": a fixed class-stratified part of the training pool, held out from
# training, for choosing settings without looking at the test set.
EVAL_SPLITS = ("test", "val")
PLUGIN_OPTIONS: List[tuple] = [("eval_split", str, "test")]


def read_yaml(path: str) -> Dict[str, Any]:
    """The YAML at ``path`` as a dict ({} for no path)."""
    if not path:
        return {}
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist", "pass --c with a USB-format YAML")
    with open(path, "r", encoding="utf-8") as f:
        try:
            loaded = YAML(typ="safe", pure=True).load(f) or {}
        except YAMLError as err:
            raise ConfigError(f"config file {path!r} is not valid YAML ({' '.join(str(err).split())})",
                              "fix the line it names (one key: value per line, spaces not tabs, "
                              "each key once)") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path!r} holds a {type(loaded).__name__}, not key: value pairs",
                          "write one option per line as key: value (USB's config format)")
    return loaded


def build_parser(algorithm: Optional[str], add_help: bool = True) -> argparse.ArgumentParser:
    """USB's base options, the plugin's and, for a registered ``algorithm``, its ``get_argument()``."""
    parser = argparse.ArgumentParser(prog="python -m r2d2_plugin.cli.train", allow_abbrev=False, add_help=add_help,
                                     description="Train a USB algorithm (r2d2 included) from a USB YAML.")
    parser.add_argument("--c", type=str, default="", help="USB-format YAML config")
    for name, kind, default in BASE_OPTIONS + PLUGIN_OPTIONS:
        parser.add_argument(f"--{name}", type=kind, default=default)
    if algorithm in ALGORITHMS:
        for option in ALGORITHMS[algorithm].get_argument():
            parser.add_argument(option.name, type=option.type, default=option.default, help=option.help)
    return parser


def check_algorithm(algorithm: str) -> None:
    """Refuse a name that USB's registry does not hold, listing those it does."""
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm '{algorithm}'",
                          f"set algorithm to one of {', '.join(sorted(ALGORITHMS.keys()))}")


def get_config(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """USB's namespace: defaults < YAML < command line; then ``check_config``."""
    argv = list(argv or [])
    # no --help here: the parser of the chosen algorithm answers it, with the algorithm's options
    first, _ = build_parser(None, add_help=False).parse_known_args(argv)
    from_file = read_yaml(first.c)
    on_command_line = any(t == "--algorithm" or t.startswith("--algorithm=") for t in argv)
    algorithm = first.algorithm if on_command_line else from_file.get("algorithm", first.algorithm)
    check_algorithm(algorithm)
    parser = build_parser(algorithm)
    check_file_keys(first.c, from_file, parser, from_file.get("algorithm", algorithm))
    parser.set_defaults(**numbers_of_file(first.c, from_file, parser))
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        option = next((t for t in unknown if t.startswith("-") and not t.lstrip("-")[:1].isdigit()), None)
        if option is None:
            raise stray_value(unknown[0], argv)
        raise unknown_option(option, option_names(parser), "on the command line")
    distributed.resolve(args)
    check_config(args)
    return args


# Counts that must be at least 1.
POSITIVE_COUNTS = ("epoch", "num_eval_iter", "num_log_iter", "batch_size", "uratio", "eval_batch_size")


def check_run_numbers(args: argparse.Namespace) -> None:
    """Refuse counts, the seed and the EMA momentum outside their range, naming the fix."""
    for name in POSITIVE_COUNTS:
        if getattr(args, name) < 1:
            raise ConfigError(f"{name}={getattr(args, name)} must be >= 1", f"set {name} to a positive count")
    if not 0 <= args.seed < 2 ** 32:
        raise ConfigError(f"seed={args.seed} is outside 0 .. 2**32 - 1 (NumPy's seed range)",
                          "use a non-negative seed")
    if not 0 <= args.ema_m <= 1:
        raise ConfigError(f"ema_m={args.ema_m} must be in [0, 1]",
                          "set the EMA momentum to a number between 0 and 1 (USB's default 0.999)")


def check_save_dir(save_dir: str) -> None:
    """Refuse a ``save_dir`` that cannot be created or written, before anything is built."""
    existing = os.path.abspath(save_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"save_dir={save_dir!r} cannot be written ({existing} is "
                          f"{'not a folder' if not os.path.isdir(existing) else 'not writable'})",
                          "set save_dir to a folder you can write to")


def option_names(parser: argparse.ArgumentParser) -> List[str]:
    """The option names ``parser`` declares (without the leading dashes)."""
    return [s[2:] for action in parser._actions for s in action.option_strings if s.startswith("--")]


def numbers_of_file(path: str, from_file: Dict[str, Any], parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """``from_file`` with its int and float options as those types (argparse converts only the
    strings of the command line), refusing a YAML value that is not such a number."""
    kinds = {action.dest: getattr(action.type, "__name__", "") for action in parser._actions}
    numbers = dict(from_file)
    for key, value in from_file.items():
        kind = kinds.get(key)
        if kind not in ("int", "float") or value is None or isinstance(value, str):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                kind == "int" and not float(value).is_integer()):
            raise ConfigError(f"{key}: {value!r} in {path} is not {'an integer' if kind == 'int' else 'a number'}",
                              f"write {key} as one {kind}")
        numbers[key] = int(value) if kind == "int" else float(value)
    return numbers


def stray_value(token: str, argv: Sequence[str]) -> ConfigError:
    """The error for a value after an option's one value, as in a list written with spaces."""
    at = len(argv) - 1 - list(reversed(argv)).index(token)
    option = next((i for i in range(at - 1, -1, -1) if argv[i].startswith("--")), None)
    if option is None:
        return ConfigError(f"{token!r} on the command line follows no option", "remove it")
    return ConfigError(f"{token!r} on the command line is a second value after {argv[option]}, which "
                       "takes one", f"remove it; a list option takes its values joined by commas "
                       f"({argv[option]} {','.join(argv[option + 1:at + 1])})")


def unknown_option(token: str, known: Sequence[str], where: str) -> ConfigError:
    """The error for an option that neither USB, the plugin nor the algorithm declares, naming
    the algorithm that declares it or the nearest declared one."""
    name = token.lstrip("-").split("=", 1)[0]
    owners = sorted(a for a in ALGORITHMS.keys()
                    if f"--{name}" in (o.name for o in ALGORITHMS[a].get_argument()))
    if owners:
        listed = ", ".join(owners[:3]) + (f" and {len(owners) - 3} more" if len(owners) > 3 else "")
        return ConfigError(f"option {name!r} {where} is an option of {listed}, not of this run's "
                           "algorithm", f"set algorithm to {'it' if len(owners) == 1 else 'one of them'}, "
                           f"or remove {name}")
    nearest = difflib.get_close_matches(name, known, n=1)
    return ConfigError(f"unknown option {name!r} {where} (not an option of USB, of the plugin or "
                       f"of the algorithm)",
                       f"did you mean {nearest[0]}? Otherwise remove it" if nearest else "remove it")


def check_file_keys(path: str, from_file: Dict[str, Any], parser: argparse.ArgumentParser,
                    file_algorithm: str) -> None:
    """Refuse a YAML key that neither USB's base options, the plugin's, the chosen algorithm's
    nor the file's own algorithm's (when the command line chose another) declare. USB's
    ``train.py`` sets any key silently, so a typo would train with the default.

    USB's own configs all write ``clip: 0.0``, a key no code of USB 0.3.2 reads (gradient
    clipping is ``clip_grad``): it is accepted at 0 (no clipping, what it does in USB) and
    refused at any other value."""
    known = option_names(parser)
    if file_algorithm in ALGORITHMS:
        known += [option.name[2:] for option in ALGORITHMS[file_algorithm].get_argument()]
    for key, value in from_file.items():
        if key == "clip" and not value:
            continue
        if key == "clip":
            raise ConfigError(f"clip: {value} in {path}: USB does not read clip",
                              f"set clip_grad: {value} (USB's gradient-norm clipping) and remove clip")
        if key not in known:
            raise unknown_option(key, known, f"in {path}")


def check_config(args: argparse.Namespace) -> None:
    """Reject bad input with the problem and the fix, before anything is built or written."""
    known = (*OFFLINE_DATASETS, *USB_CV_DATASETS, *USB_NLP_AUDIO_DATASETS)
    if args.dataset not in known:
        raise unknown_dataset(args.dataset)
    expected = USB_CV_DATASETS.get(args.dataset, OFFLINE_CLASSES.get(args.dataset))
    if expected is not None:
        check_num_classes(args.dataset, args.num_classes, expected)
    if (args.dataset in BALANCED_SPLIT_DATASETS and args.lb_imb_ratio == 1
            and (args.num_labels <= 0 or args.num_labels % args.num_classes)):
        raise ConfigError(f"num_labels={args.num_labels} cannot be split evenly over the "
                          f"{args.num_classes} classes of '{args.dataset}' (USB draws as many "
                          "labels of every class)", f"use a positive multiple of {args.num_classes}")
    check_run_numbers(args)
    if args.num_train_iter % args.epoch:
        raise ConfigError(f"num_train_iter={args.num_train_iter} is not a multiple of "
                          f"epoch={args.epoch}", "choose epoch so that it divides num_train_iter")
    check_save_dir(args.save_dir)
    if args.load_path and not args.resume:
        raise ConfigError(f"load_path={args.load_path!r} is set but resume is False, so the "
                          "checkpoint would not be read (and with overwrite: True a new run would "
                          "replace the folder of the same save_name)",
                          "set resume: True to continue from it, or load_path: None for a new run")
    if args.resume:
        if not args.load_path or not os.path.isfile(args.load_path):
            raise ConfigError(f"resume is on but the checkpoint load_path={args.load_path!r} "
                              f"does not exist",
                              "point load_path at an existing latest_model.pth, or set "
                              "resume: False to start a new run")
    if args.eval_split not in EVAL_SPLITS or (args.eval_split != "test"
                                              and args.dataset not in VAL_SPLIT_DATASETS):
        raise ConfigError(f"eval_split={args.eval_split!r} is not available for dataset '{args.dataset}'",
                          f"use eval_split: test, or eval_split: val with dataset: "
                          f"{' or '.join(VAL_SPLIT_DATASETS)}")
    if issubclass(ALGORITHMS[args.algorithm], R2D2):
        check_loss_options(args)
        StageSchedule.from_args(args)
        check_one_process(args, args.world_size)
    if issubclass(ALGORITHMS[args.algorithm], R2D2Strong):
        check_strong_options(args)
