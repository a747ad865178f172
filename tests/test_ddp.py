"""A real torchrun with 2 CPU processes (gloo) on a tiny store."""
from __future__ import annotations

import json

import pytest

from pipeline.training import launch_ddp
from pipeline.training.synthetic import make_synthetic_store

MODEL = dict(input_dim=28, embed="conv", embed_channels=32, embed_layers=2, downsample=1, lstm_hidden=32,
             lstm_layers=2, head_hidden=64)
TRAIN = dict(epochs=3, batch_size=4, lr=5e-3, keep_top_k=2, seed=3, scheduler={"name": "cosine", "warmup_epochs": 1})


@pytest.mark.slow
def test_torchrun_two_cpu_ranks(tmp_path):
    train = make_synthetic_store(tmp_path / "train", 26, seed=1)  # 7 batches: one dropped so both ranks get 3
    dev = make_synthetic_store(tmp_path / "dev", 8, seed=2, partition="dev")
    out = tmp_path / "run"
    job = {"model_cfg": MODEL, "train_cfg": TRAIN, "train_store": str(train.path), "dev_store": str(dev.path),
           "out_dir": str(out), "tracking": "off", "run_name": "ddp-test", "run_config": {}, "progress": False}

    metrics = launch_ddp(job, nproc=2)

    assert metrics["world_size"] == 2 and metrics["epochs"] == 3
    assert 0 <= metrics["best_dev_lev"] <= 2 * metrics["dev_blank_lev"]
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    index = json.loads((out / "checkpoints" / "index.json").read_text())
    kept = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    assert kept == sorted([e["file"] for e in index["checkpoints"]] + ["last.pt"])  # written once, by rank 0
    assert len(index["checkpoints"]) == 2 and not list((out / "checkpoints").glob("*.tmp"))
