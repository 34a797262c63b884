"""Crash safety with USB's real trainer: a training process killed with SIGKILL (between saves,
and in the middle of a save) resumes from its last good checkpoint and ends exactly where an
uninterrupted run ends; an unreadable checkpoint is reported by name and left as it is.

A run stopped with Ctrl-C (SIGINT) prints the command that resumes it. The killed runs are real ``python -m r2d2_plugin.cli.train`` processes. To kill one in the middle of
a save, the test puts a named pipe where that process will write its next temporary checkpoint
(``.latest_model.pth.<pid>.tmp``, see ``r2d2_plugin.usb.compat.atomic_save``): the save blocks once
the pipe's buffer is full, the test reads the first bytes of the checkpoint from the pipe, and
kills the process while ``torch.save`` is still writing.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import torch

from r2d2_plugin import ConfigError
from r2d2_plugin.usb import compat
from r2d2_plugin.cli.train import run
from conftest import ROOT, file_digest, short_argv

# Every run of this file trains with one thread, in this process and in the killed ones, so
# their floating-point results are comparable bit for bit.
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
DEADLINE_S = 240


def final_state(path: Path):
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint["model"], checkpoint["ema_model"], checkpoint["r2d2"]["store"]["logits"]


def assert_same_end(a: Path, b: Path) -> None:
    model_a, ema_a, store_a = final_state(a)
    model_b, ema_b, store_b = final_state(b)
    assert torch.equal(store_a, store_b)
    for name in model_a:
        torch.testing.assert_close(model_b[name], model_a[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(ema_b[name], ema_a[name], rtol=0, atol=0, msg=name)


def launch(argv: List[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "r2d2_plugin.cli.train", *argv], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists():
        assert proc.poll() is None, f"the training process ended (exit {proc.returncode}) early"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def resume(save_dir: Path, name: str) -> Path:
    latest = save_dir / name / "latest_model.pth"
    torch.set_num_threads(1)
    run(short_argv(save_dir, "--resume", "True", "--load_path", str(latest), name=name))
    return latest


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted run's final checkpoint."""
    save_dir = tmp_path_factory.mktemp("straight")
    torch.set_num_threads(1)
    run(short_argv(save_dir, name="straight"))
    return save_dir / "straight" / "latest_model.pth"


def test_a_run_killed_between_saves_resumes_and_matches(tmp_path, straight):
    assert not list(straight.parent.glob(".*.tmp"))
    proc = launch(short_argv(tmp_path, name="killed"), tmp_path)
    latest = tmp_path / "killed" / "latest_model.pth"
    wait_for(latest, proc)
    kill(proc)
    saved = torch.load(latest, map_location="cpu", weights_only=False)
    assert saved["it"] < 40 and saved["it"] % 10 == 0 and "r2d2" in saved

    assert_same_end(straight, resume(tmp_path, "killed"))


def test_a_run_killed_during_a_save_keeps_its_last_checkpoint_and_matches(tmp_path, straight):
    proc = launch(short_argv(tmp_path, name="killed"), tmp_path)
    latest = tmp_path / "killed" / "latest_model.pth"
    wait_for(latest, proc)
    # Paused while the pipe is laid (the next save is one evaluation, 10 iterations, away: a
    # fast machine could reach it first).
    proc.send_signal(signal.SIGSTOP)
    first = latest.read_bytes()
    assert torch.load(latest, map_location="cpu", weights_only=False)["it"] == 10
    pipe = tmp_path / "killed" / f".latest_model.pth.{proc.pid}.tmp"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    proc.send_signal(signal.SIGCONT)
    try:
        deadline, head = time.monotonic() + DEADLINE_S, b""
        while not head:
            assert proc.poll() is None and time.monotonic() < deadline, "the save never began"
            try:
                head = os.read(reader, 1 << 16)
            except BlockingIOError:
                pass
            time.sleep(0.005)
        kill(proc)
    finally:
        os.close(reader)
    assert head.startswith(b"PK")  # torch.save had begun writing its zip archive
    assert latest.read_bytes() == first  # the checkpoint at iteration 10, whole

    assert_same_end(straight, resume(tmp_path, "killed"))


def test_ctrl_c_names_the_command_that_resumes_and_it_matches(tmp_path, straight):
    argv = short_argv(tmp_path, name="interrupted")
    # SIGINT as a terminal delivers it: a test run started in the background inherits it ignored,
    # and Python then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen([sys.executable, "-m", "r2d2_plugin.cli.train", *argv], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    latest = tmp_path / "interrupted" / "latest_model.pth"
    wait_for(latest, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    command = next(line for line in stderr.splitlines() if "continue with: " in line).split("continue with: ")[-1]
    assert command == " ".join(["python -m r2d2_plugin.cli.train", *argv, "--resume True --load_path", str(latest)])

    assert_same_end(straight, resume(tmp_path, "interrupted"))


def test_an_unreadable_checkpoint_is_named_and_left_as_it_is(tmp_path, straight):
    folder = tmp_path / "broken"
    shutil.copytree(straight.parent, folder)
    latest = folder / "latest_model.pth"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    before = {p.name: file_digest(p) for p in folder.iterdir()}
    assert {"log.txt", "curves.csv"} <= set(before)
    with pytest.raises(ConfigError, match="model_best.pth") as caught:
        run(short_argv(tmp_path, "--resume", "True", "--load_path", str(latest), name="broken"))
    assert str(latest) in str(caught.value) and "cannot be read" in str(caught.value)
    assert {p.name: file_digest(p) for p in folder.iterdir()} == before  # log.txt too
    assert (torch.save, torch.load) == (compat.USB_TORCH_SAVE, compat.USB_TORCH_LOAD)
