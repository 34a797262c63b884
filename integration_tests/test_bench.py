"""The head-to-head suite runner on a tiny budget: tables, resumability, shared settings."""
from __future__ import annotations

import csv
import re
import subprocess
import sys

import numpy as np

import pytest
from PIL import Image

from r2d2_plugin import ConfigError
from r2d2_plugin.tools import bench
from r2d2_plugin.tools.common import write_rows
from conftest import DIGITS_CONFIG, R2D2_SHORT, ROOT, SHORT
from test_fashionmnist import write_npz

TINY = [*SHORT, *R2D2_SHORT, "--num_eval_iter", "20"]
PLOTS = ("top1_vs_iteration.png", "r2d2_pseudo_labels.png")


def test_suite_runs_every_algorithm_and_label_count_once_and_resumes(tmp_path):
    out = tmp_path / "suite"
    argv = ["--c", DIGITS_CONFIG, "--algorithms", "r2d2", "supervised", "--num_labels", "40", "100",
            "--seeds", "0", "--out", str(out), *TINY]
    bench.main(argv)
    with open(out / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["algorithm"], r["num_labels"]) for r in rows] == [
        ("r2d2", "40"), ("supervised", "40"), ("r2d2", "100"), ("supervised", "100")]
    assert all(0 <= float(r["error_pct"]) <= 100 and float(r["step_seconds"]) > 0 for r in rows)
    table = (out / "table.md").read_text()
    assert "digits, 40 labels" in table and "digits, 100 labels" in table and "R2-D2 cost" in table
    assert (out / "top1_vs_iteration.png").stat().st_size > 0 and (out / "r2d2_pseudo_labels.png").is_file()
    assert (out / "COMMAND").read_text().startswith("python -m r2d2_plugin.tools.bench --c ")

    before = (out / "runs.csv").read_text()
    bench.main(argv)
    assert (out / "runs.csv").read_text() == before
    # Run folders are not committed: without the checkpoints, the cost line stays as measured.
    for checkpoint in (out / "runs").glob("*/latest_model.pth"):
        checkpoint.unlink()
    bench.main(argv)
    assert (out / "table.md").read_text() == table

    # Re-running one run of the suite (its row deleted) keeps the whole suite's COMMAND, table and
    # plots: the other label count's section as it was, the figures the size the full command made.
    command, sizes = (out / "COMMAND").read_text(), {p: Image.open(out / p).size for p in PLOTS}
    with open(out / "runs.csv", newline="") as f:
        kept = [r for r in csv.DictReader(f) if (r["algorithm"], r["num_labels"]) != ("r2d2", "100")]
    write_rows(str(out / "runs.csv"), bench.FIELDS, kept)
    bench.main(["--c", DIGITS_CONFIG, "--algorithms", "r2d2", "--num_labels", "100", "--seeds", "0",
                "--out", str(out), *TINY])
    assert (out / "COMMAND").read_text() == command
    with open(out / "runs.csv", newline="") as f:
        assert [(r["algorithm"], r["num_labels"]) for r in csv.DictReader(f)] == [
            ("r2d2", "40"), ("supervised", "40"), ("r2d2", "100"), ("supervised", "100")]
    after = (out / "table.md").read_text()
    assert after.split("### ")[1] == table.split("### ")[1] and after.count("R2-D2 cost") == 2
    assert {p: Image.open(out / p).size for p in PLOTS} == sizes


@pytest.mark.parametrize("line, changed", [("batch_size: 16", "batch_size: 32"),
                                           ("data_dir: ./data", "data_dir: ./other_data")])
def test_an_algorithm_config_must_share_data_net_batches_and_budget(tmp_path, line, changed):
    other = tmp_path / "other.yaml"
    text = open(DIGITS_CONFIG).read()
    assert line in text
    other.write_text(text.replace(line, changed))
    with pytest.raises(ConfigError, match=f"differs from the suite's .* in {line.split(':')[0]}"):
        bench.main(["--c", DIGITS_CONFIG, "--algorithms", "r2d2", "r2d2_strong",
                    "--algorithm_config", f"r2d2_strong={other}", "--out", str(tmp_path / "x")])


def test_an_unknown_algorithm_is_refused_before_any_run(tmp_path):
    with pytest.raises(ConfigError, match="unknown algorithm 'fixmach'.*one of .*fixmatch"):
        bench.main(["--c", DIGITS_CONFIG, "--algorithms", "supervised", "fixmach", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_bad_input_on_the_command_line_prints_the_fix_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "r2d2_plugin.tools.bench", "--c", str(tmp_path / "none.yaml"),
                           "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(r"^error: config file '.*none.yaml' does not exist\. Fix: ", done.stderr, re.M), done.stderr



def test_a_config_per_label_count(tmp_path):
    """``{num_labels}`` in a config path: each label count's runs read their own file (here two
    files that differ only in how often USB evaluates)."""
    for n, every in ((40, 20), (100, 10)):
        (tmp_path / f"digits_{n}.yaml").write_text(
            open(DIGITS_CONFIG).read().replace("num_eval_iter: 100", f"num_eval_iter: {every}"))
    out = tmp_path / "suite"
    argv = ["--c", str(tmp_path / "digits_{num_labels}.yaml"), "--algorithms", "supervised", "--seeds", "0",
            "--out", str(out), "--num_train_iter", "40", "--epoch", "4", "--batch_size", "8", "--uratio", "2"]
    with pytest.raises(ConfigError, match="give --num_labels"):
        bench.main(argv)
    bench.main([*argv, "--num_labels", "40", "100"])
    for n, every in ((40, 20), (100, 10)):
        curve = bench.read_curve(str(out / "curves" / f"supervised_{n}_seed0.csv"))
        evaluated = curve["iteration"][~np.isnan(curve["eval/top-1-acc"])]
        assert list(evaluated) == list(range(every, 41, every)), (n, evaluated)


def test_adding_seeds_to_a_suite_names_every_seed_in_its_command(tmp_path):
    """A command with the folder's settings and other seeds trains only its own seeds; the folder's
    ``COMMAND`` and table then name the seeds of both, so that ``COMMAND`` regenerates every row."""
    out = tmp_path / "suite"
    argv = ["--c", DIGITS_CONFIG, "--algorithms", "supervised", "--out", str(out), *SHORT]
    bench.main([*argv, "--seeds", "1"])
    bench.main([*argv, "--seeds", "0", "2", "--jobs", "2"])
    assert (out / "COMMAND").read_text().rstrip().endswith(" --seeds 0 1 2 --jobs 2")
    with open(out / "runs.csv", newline="") as f:
        assert [r["seed"] for r in csv.DictReader(f)] == ["0", "1", "2"]
    assert re.search(r"\| supervised \|[^\n]*\| 3 \|", (out / "table.md").read_text())

    # Other settings into the same folder would table its runs under them: refused, nothing changed.
    before = {name: (out / name).read_text() for name in ("COMMAND", "runs.csv", "table.md")}
    with pytest.raises(ConfigError, match="holds runs made with other settings .*another --out"):
        bench.main([*argv, "--seeds", "0", "3", "--ema_m", "0.9"])
    assert {name: (out / name).read_text() for name in before} == before


def test_a_label_count_the_data_does_not_have_is_refused(tmp_path):
    """npz data brings its own labeled set (40 here): a suite asking for 20 stops with the fix."""
    write_npz(tmp_path / "data.npz")
    with pytest.raises(ConfigError, match="leaves 40 labeled images for training, not 20.*pass --num_labels 40"):
        bench.main(["--c", DIGITS_CONFIG, "--algorithms", "supervised", "--num_labels", "20", "--seeds", "0",
                    "--dataset", "npz", "--data_dir", str(tmp_path / "data.npz"), "--out", str(tmp_path / "x"),
                    *SHORT])
    assert not (tmp_path / "x" / "runs").exists()  # refused before the first run
