"""A short r2d2 run logs to W&B offline; the run's own .wandb file holds metrics, tags, summary."""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Dict, List

from wandb.proto import wandb_internal_pb2

from r2d2_plugin.cli.train import run
from conftest import short_argv

BLOCK = 32768  # the .wandb file is a LevelDB-style log of protobuf records


def records(path: Path) -> List[wandb_internal_pb2.Record]:
    raw, pos, chunk, out = path.read_bytes(), 7, b"", []
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if BLOCK - pos % BLOCK < 7:
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunk += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_r2d2_run_logs_metrics_tags_config_and_summary_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(short_argv(tmp_path, "--use_wandb", "True", name="wb"))

    (path,) = (tmp_path / "wandb" / "wb").rglob("run-*.wandb")
    recs = records(path)
    meta = [r.run for r in recs if r.WhichOneof("record_type") == "run"][-1]  # last update wins
    assert meta.display_name == "r2d2_digits_40_seed0"
    assert meta.run_group == "digits_40"
    assert {"dataset:digits", "num_labels:40", "algorithm:r2d2", "seed:0", "net:digits_cnn"} <= set(meta.tags)
    config = {item_key(i): json.loads(i.value_json) for i in meta.config.update}
    assert config["r2d2_alpha"] == 0.1 and config["algorithm"] == "r2d2"

    history: Dict[str, list] = {}
    for r in recs:
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                history.setdefault(item_key(item), []).append(json.loads(item.value_json))
    for key in ("r2d2/stage", "r2d2/repredictions", "r2d2/pseudo_label_entropy",
                "r2d2/pseudo_label_acc", "train/sup_loss", "train/unsup_loss", "eval/top-1-acc"):
        assert key in history, key
    assert max(history["r2d2/stage"]) == 4 and max(history["r2d2/repredictions"]) == 6

    summary = run_summary(recs)
    assert 0.0 <= summary["final top-1"] <= summary["best top-1"] <= 1.0
    assert abs(summary["error %"] - 100 * (1 - summary["final top-1"])) < 1e-9

    # Resumed at its end, the run trains no step and its summary evaluates the final weights.
    run(short_argv(tmp_path, "--use_wandb", "True", "--resume", "True",
                   "--load_path", str(tmp_path / "wb" / "latest_model.pth"), name="wb"))
    (resumed,) = set((tmp_path / "wandb" / "wb").rglob("run-*.wandb")) - {path}
    assert run_summary(records(resumed))["final top-1"] == summary["final top-1"]


def run_summary(recs: List[wandb_internal_pb2.Record]) -> Dict[str, float]:
    summary = {}
    for r in recs:
        if r.WhichOneof("record_type") == "summary":
            summary.update({item_key(i): json.loads(i.value_json) for i in r.summary.update})
    return summary
