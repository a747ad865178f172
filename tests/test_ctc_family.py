"""hw3p2 model + CTC training loop: shapes, padding, SpecAugment, learning, checkpoints, resume, W&B, configs."""
from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path

import pydantic
import pytest
import torch
import torch.nn.functional as F
import yaml

from pipeline.models.ctc_rnn import CTCRNN, CTCRNNConfig
from pipeline.decoding.ctc_greedy import greedy_decode
from pipeline.tasks.ctc_recipe import CTCTrainConfig
from pipeline.models.load import load_model
from pipeline.training.checkpoints import TopKKeeper
from pipeline.training.ctc import CTCTask
from pipeline.training import loop
from pipeline.training.specaugment import SpecAugmentConfig, spec_augment
from pipeline.training.synthetic import make_synthetic_store

CONFIGS = Path(__file__).resolve().parent.parent / "pipeline" / "configs" / "hw3p2"

TINY_MODEL = dict(input_dim=28, embed="conv", embed_channels=32, embed_layers=2, downsample=1, embed_dropout=0.1,
                  lstm_hidden=32, lstm_layers=2, lstm_dropout=0.1, head_hidden=64, head_dropout=0.1)
TINY_TRAIN = dict(epochs=4, batch_size=4, eval_batch_size=16, lr=5e-3, keep_top_k=2, seed=3,
                  scheduler={"name": "cosine", "warmup_epochs": 1, "min_lr": 1e-4},
                  specaugment={"freq_mask": 4, "time_mask": 5, "p_freq": 0.5, "p_time": 0.5})


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return make_synthetic_store(root / "train", 24, seed=1), make_synthetic_store(root / "dev", 8, seed=2, partition="dev")


def run(stores, out_dir, model=None, train=None, **kwargs):
    kwargs = {"tracking": "off", "run_name": "test", "run_config": {}, "progress": False, **kwargs}
    task = CTCTask(CTCRNNConfig(**(model or TINY_MODEL)), CTCTrainConfig(**(train or TINY_TRAIN)), *stores)
    return loop.train(task, out_dir, **kwargs)


# ---- model ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("embed", ["conv", "resnet"])
@pytest.mark.parametrize("downsample", [0, 1, 2])
def test_output_lengths_follow_the_striding_and_feed_ctc(embed, downsample):
    torch.manual_seed(0)
    model = CTCRNN(CTCRNNConfig(**{**TINY_MODEL, "embed": embed, "downsample": downsample})).eval()
    lengths = torch.tensor([41, 40, 17, 9])
    log_probs, out_lengths = model(torch.randn(4, 41, 28), lengths)

    expected = lengths.clone()
    for _ in range(downsample):
        expected = (expected + 1) // 2  # ceil(T / 2) per stride-2 layer, kernel 3, padding 1
    assert out_lengths.tolist() == expected.tolist()
    assert log_probs.shape == (4, int(expected.max()), 41)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(4, log_probs.shape[1]), atol=1e-5)
    targets = torch.randint(1, 41, (4, 2))
    loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, torch.full((4,), 2), blank=0)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("embed", ["conv", "resnet"])
def test_padding_does_not_change_an_utterance(embed):
    torch.manual_seed(0)
    model = CTCRNN(CTCRNNConfig(**{**TINY_MODEL, "embed": embed, "downsample": 2})).eval()
    short, long = torch.randn(1, 23, 28), torch.randn(1, 50, 28)
    alone, alone_len = model(short, torch.tensor([23]))
    batch = torch.zeros(2, 50, 28)
    batch[0], batch[1, :23] = long[0], short[0]
    batch[1, 23:] = 3.0  # garbage in the padding must not leak in either
    together, together_len = model(batch, torch.tensor([50, 23]))
    assert together_len[1] == alone_len[0]
    assert torch.allclose(together[1, : alone_len[0]], alone[0], atol=1e-5)


def test_greedy_decode_merges_repeats_and_drops_blanks():
    frames = torch.tensor([[3, 3, 0, 3, 5, 5, 0, 0, 7, 9]])
    log_probs = F.one_hot(frames, 41).float().log_softmax(-1)
    assert greedy_decode(log_probs, torch.tensor([9])) == [[3, 3, 5, 7]]


# ---- SpecAugment ----------------------------------------------------------------------------------------------------

def test_specaugment_masks_stay_inside_each_utterance():
    B, T, Fdim = 64, 60, 28
    lengths = torch.randint(5, T + 1, (B,))
    x = torch.randn(B, T, Fdim).abs() + 1.0  # nowhere zero before masking
    padding = torch.arange(T)[None, :] >= lengths[:, None]
    x[padding] = 7.0
    cfg = SpecAugmentConfig(freq_mask=5, time_mask=8, n_freq=2, n_time=2)
    y = spec_augment(x, lengths, cfg, torch.Generator().manual_seed(0))

    assert torch.equal(y[padding], x[padding])
    masked = y == 0
    assert masked.any()
    assert not (masked & padding[:, :, None]).any()
    masked_frames = masked.all(dim=2)               # a time mask zeroes whole frames
    assert masked_frames.sum(dim=1).max() <= 2 * 8  # n_time × time_mask
    unchanged = y == x
    assert torch.equal(unchanged | masked, torch.ones_like(masked))


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_specaugment_applies_at_the_given_probability(p):
    B, T = 4000, 30
    x = torch.ones(B, T, 10)
    cfg = SpecAugmentConfig(freq_mask=3, time_mask=0, p_freq=p)
    y = spec_augment(x, torch.full((B,), T), cfg, torch.Generator().manual_seed(1))
    touched = (y == 0).flatten(1).any(dim=1).float().mean().item()
    # a chosen utterance can draw width 0 (1 in 4 for freq_mask=3)
    assert touched == pytest.approx(p * 0.75, abs=0.03)


def test_specaugment_off_is_identity():
    x = torch.randn(2, 10, 28)
    assert spec_augment(x, torch.tensor([10, 5]), SpecAugmentConfig(), torch.Generator()) is x


# ---- learning -------------------------------------------------------------------------------------------------------

def test_tiny_model_overfits_a_tiny_set(tmp_path):
    train = make_synthetic_store(tmp_path / "train", 16, seed=5, noise=0.2)
    cfg = {**TINY_TRAIN, "epochs": 20, "batch_size": 2, "lr": 1e-2, "specaugment": {}, "eval_every": 5}
    model = {**TINY_MODEL, "embed_dropout": 0.0, "lstm_dropout": 0.0, "head_dropout": 0.0}
    metrics = run((train, train), tmp_path / "run", model=model, train=cfg)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["train_loss"] < 0.25 * history[0]["train_loss"]
    assert metrics["best_dev_lev"] < 0.5 * metrics["dev_blank_lev"]  # far from the empty output


# ---- checkpoints ----------------------------------------------------------------------------------------------------

def test_topk_keeper_keeps_the_k_best_and_indexes_them(tmp_path):
    keeper = TopKKeeper(tmp_path, k=2)
    for epoch, lev in enumerate([5.0, 3.0, 4.0, 2.0, 6.0, 2.0], start=1):
        keeper.offer({"epoch": epoch}, lev, epoch)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [(e["epoch"], e["dev_lev"]) for e in index["checkpoints"]] == [(4, 2.0), (6, 2.0)]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch004-lev2.00.pt", "epoch006-lev2.00.pt"]
    reopened = TopKKeeper(tmp_path, k=2)
    assert reopened.best["epoch"] == 4
    reopened.drop_after(5)
    assert [p.name for p in tmp_path.glob("*.pt")] == ["epoch004-lev2.00.pt"]


def test_keep_last_keeps_the_most_recent_epochs_too(tmp_path):
    keeper = TopKKeeper(tmp_path, k=1, keep_last=2)
    for epoch, lev in enumerate([1.0, 3.0, None, 4.0], start=1):
        keeper.offer({"epoch": epoch}, lev, epoch)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [e["epoch"] for e in index["checkpoints"]] == [1]
    assert [e["file"] for e in index["recent"]] == ["epoch003.pt", "epoch004-lev4.00.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch001-lev1.00.pt", "epoch003.pt", "epoch004-lev4.00.pt"]


def test_training_writes_last_topk_index_and_history(tmp_path, stores):
    metrics = run(stores, tmp_path)
    ckpts = tmp_path / "checkpoints"
    history = json.loads((tmp_path / "history.json").read_text())
    index = json.loads((ckpts / "index.json").read_text())

    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert set(history[0]) == {"epoch", "train_loss", "dev_loss", "dev_lev", "lr", "seconds"}
    best_two = sorted(history, key=lambda r: (r["dev_lev"], r["epoch"]))[:2]
    assert [e["epoch"] for e in index["checkpoints"]] == [r["epoch"] for r in best_two]
    kept = sorted(p.name for p in ckpts.glob("epoch*.pt"))
    assert kept == sorted(e["file"] for e in index["checkpoints"])
    assert all(re.fullmatch(r"epoch\d{3}-lev\d+\.\d\d\.pt", name) for name in kept)
    assert (ckpts / "last.pt").exists() and not list(ckpts.glob("*.tmp"))
    assert metrics["best_epoch"] == best_two[0]["epoch"] and metrics["epochs"] == 4 and metrics["params"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics

    model = load_model(ckpts / index["checkpoints"][0]["file"])
    assert not model.training and model.cfg == CTCRNNConfig(**TINY_MODEL)


# ---- resume ---------------------------------------------------------------------------------------------------------

def assert_same_run(dir_a: Path, dir_b: Path) -> None:
    a, b = (torch.load(d / "checkpoints" / "last.pt", weights_only=False) for d in (dir_a, dir_b))
    assert a["epoch"] == b["epoch"] == 4
    assert a["schedule"] == b["schedule"]
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    hist_a, hist_b = (json.loads((d / "history.json").read_text()) for d in (dir_a, dir_b))
    assert [(r["epoch"], r["lr"], r["train_loss"], r["dev_lev"]) for r in hist_a] == \
           [(r["epoch"], r["lr"], r["train_loss"], r["dev_lev"]) for r in hist_b]


def test_resume_equals_a_straight_run(tmp_path, stores):
    run(stores, tmp_path / "straight")
    first = run(stores, tmp_path / "resumed", stop_after_epoch=2)
    assert first["epochs"] == 2
    second = run(stores, tmp_path / "resumed")
    assert second["epochs"] == 4
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    assert run(stores, tmp_path / "resumed")["epochs"] == 4  # finished: a no-op


def test_killed_mid_epoch_resumes_from_the_last_completed_epoch(tmp_path, stores, monkeypatch):
    run(stores, tmp_path / "straight")
    real_step, calls = CTCTask.loss, {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * 6 + 3:  # 6 batches per epoch: dies inside epoch 3
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(CTCTask, "loss", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run(stores, tmp_path / "killed")
    assert torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 2
    monkeypatch.setattr(CTCTask, "loss", real_step)
    run(stores, tmp_path / "killed")
    assert_same_run(tmp_path / "straight", tmp_path / "killed")


# ---- tracking and configs -------------------------------------------------------------------------------------------

def wandb_records(path: Path):
    """Records of an offline .wandb file (W&B header, then LevelDB-log framing of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending, block = path.read_bytes(), 7, b"", 32768
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_records_the_metrics(tmp_path, stores, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    train = {**TINY_TRAIN, "epochs": 2}
    run(stores, tmp_path, train=train, tracking="offline", run_name="offline-test",
        run_config={"train": train, "wandb_api_key": "must-not-be-logged"})
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1

    # wandb-core may still be appending to the log for a moment after finish() returns: read until it settles.
    deadline = time.time() + 30
    while True:
        records = list(wandb_records(runs[0]))
        history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
                   for r in records if r.WhichOneof("record_type") == "history"]
        summaries = [r for r in records if r.WhichOneof("record_type") == "summary"]
        if (len(history) >= 2 and summaries) or time.time() > deadline:
            break
        time.sleep(0.2)
    logged = json.loads((tmp_path / "history.json").read_text())
    assert [h["_step"] for h in history] == [1, 2]
    assert [h["dev/lev"] for h in history] == [r["dev_lev"] for r in logged]
    assert [h["train/loss"] for h in history] == pytest.approx([r["train_loss"] for r in logged])
    summary_keys = {item.key for r in records if r.WhichOneof("record_type") == "summary" for item in r.summary.update}
    assert {"best_dev_lev", "params"} <= summary_keys
    raw = runs[0].read_bytes()
    assert b"batch_size" in raw and b"must-not-be-logged" not in raw


def test_unknown_config_keys_are_rejected():
    with pytest.raises(pydantic.ValidationError, match="lstm_hiden"):
        CTCRNNConfig(lstm_hiden=128)
    with pytest.raises(pydantic.ValidationError, match="warmup"):
        CTCTrainConfig(scheduler={"name": "cosine", "warmup": 1})
    with pytest.raises(pydantic.ValidationError):
        CTCTrainConfig(specaugment={"freq_masks": 3})


@pytest.mark.parametrize("name", ["default", "demo"])
def test_shipped_recipes_validate(name):
    recipe = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    model = CTCRNN(CTCRNNConfig(**recipe["model"], input_dim=28))
    CTCTrainConfig(**recipe["train"])
    assert sum(p.numel() for p in model.parameters()) < 20_000_000  # the course's parameter limit


@pytest.mark.parametrize("key", ["input_dim", "num_classes"])
def test_a_recipe_may_not_set_what_the_profile_decides(tmp_path, key):
    """The train stage fills these from the profile: a recipe value would be overwritten without a word."""
    from pipeline.config import ConfigError, load_recipe

    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"model:\n  {key}: 13\n")
    with pytest.raises(ConfigError, match=rf"model.*{key} is set from the competition profile"):
        load_recipe("hw3p2", str(recipe))
    with pytest.raises(ConfigError, match=key):
        load_recipe("hw3p2", "demo", [f"model.{key}=28"])
