"""Real torchrun with 2 CPU processes (gloo) for every family: the one loop shards each epoch's batches, rank 0
evaluates and writes checkpoints once."""
from __future__ import annotations

import json

import pytest

from pipeline.config import load_recipe
from pipeline.engine import Pipeline
from pipeline.tasks import stages_for
from pipeline.training.launch import launch_ddp
from pipeline.training.synthetic import make_synthetic_store
from tests.kaggle_replica import make_replica

MODEL = dict(input_dim=28, embed="conv", embed_channels=32, embed_layers=2, downsample=1, lstm_hidden=32,
             lstm_layers=2, head_hidden=64)
TRAIN = dict(epochs=3, batch_size=4, lr=5e-3, keep_top_k=2, seed=3, scheduler={"name": "cosine", "warmup_epochs": 1})


def assert_written_once(out) -> None:
    index = json.loads((out / "checkpoints" / "index.json").read_text())
    kept = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    assert kept == sorted({e["file"] for e in index["checkpoints"] + index["recent"]} | {"last.pt"})
    assert not list((out / "checkpoints").glob("*.tmp"))


@pytest.mark.slow
def test_torchrun_two_cpu_ranks(tmp_path):
    make_synthetic_store(tmp_path / "train", 26, seed=1)  # 7 batches: one dropped so both ranks get 3
    make_synthetic_store(tmp_path / "dev", 8, seed=2, partition="dev")
    out = tmp_path / "run"
    job = {"factory": "pipeline.training.ctc:make_task",
           "task_args": {"params": {"model": {**MODEL, "num_classes": 41}, "train": TRAIN}, "normalized": str(tmp_path)},
           "out_dir": str(out), "tracking": "off", "run_name": "ddp-test", "run_config": {}, "progress": False}

    metrics = launch_ddp(job, nproc=2)

    assert metrics["world_size"] == 2 and metrics["epochs"] == 3 and metrics["stop_reason"] == "completed"
    assert 0 <= metrics["best_dev_lev"] <= 2 * metrics["dev_blank_lev"]
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert_written_once(out)
    assert len(json.loads((out / "checkpoints" / "index.json").read_text())["checkpoints"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo-hw1p2", "demo-hw3p2", "demo-hw4p2"])
def test_every_family_trains_with_two_ranks(tmp_path, name):
    """What `asrpipe train --task <demo> --nproc 2` runs: the train stage under torchrun, 2 gloo ranks."""
    profile = make_replica(tmp_path / "competition", name, n_train=8, n_dev=3, n_test=2)
    pipeline = Pipeline(profile, load_recipe(profile.family, "tiny"), stages_for(profile.family),
                        artifacts_root=tmp_path / "artifacts", submissions_root=tmp_path / "submissions",
                        options={"wandb": "off", "progress": False, "nproc": 2}, config_name="tiny")
    pipeline.run(stop="train")

    out = pipeline.plan["train"].dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["stop_reason"] == "completed"
    assert json.loads((out / "ddp_job.json").read_text())["factory"].startswith("pipeline.training.")
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, metrics["epochs_planned"] + 1))
    assert pipeline.plan["train"].artifact.manifest["metrics"]["world_size"] == 2
    assert_written_once(out)
