"""hw1p2 pieces: MLP shapes and parameter counts, the parameter-limit refusal, named recipes, schedules, masking,
frame CSV rows, posterior ensembling."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, load_recipe
from pipeline.decoding.frame_report import confusion_matrix, majority_baseline, per_class_accuracy
from pipeline.models.mlp import FrameMLP
from pipeline.stages import train_frames
from pipeline.stages.csv import frame_rows
from pipeline.tasks.frames_recipe import (FrameSchedulerConfig, MLPConfig, ParamLimitError, fit_width,
                                         resolve_model)
from pipeline.tasks.train_recipe import SpecAugmentConfig
from pipeline.tasks.profiles import PROFILES
from pipeline.training.frames import mask_windows
from pipeline.training.optim import Schedule

DEMO = PROFILES["demo-hw1p2"]
NAMED = ("demo", "default", "seed000-best", "seed002", "tiny")


# ---- shapes and counts -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("archetype, expected", [
    ("cylinder", [100, 100, 100, 100, 100]),
    ("pencil", [100, 100, 100, 100, 100]),
    ("pyramid", [100, 88, 75, 62, 50]),
    ("inverted-pyramid", [50, 62, 75, 88, 100]),
    ("diamond", [50, 75, 100, 75, 50]),
])
def test_archetype_widths(archetype, expected):
    widths = MLPConfig(archetype=archetype, num_layers=5, width=100, taper=0.5).hidden_widths()
    assert widths == expected


def test_even_diamond_is_full_width_in_the_middle():
    assert MLPConfig(archetype="diamond", num_layers=4, width=64, taper=0.25).hidden_widths() == [16, 64, 64, 16]


@pytest.mark.parametrize("archetype", ["cylinder", "pyramid", "inverted-pyramid", "diamond"])
@pytest.mark.parametrize("batch_norm", ["all", "alternate", "none"])
def test_planned_parameter_count_is_the_built_models(archetype, batch_norm):
    cfg = MLPConfig(input_dim=13, context=4, num_classes=40, archetype=archetype, num_layers=5, width=48,
                    batch_norm=batch_norm, dropout=[0.1, 0.2, 0.0, 0.3, 0.1])
    model = FrameMLP(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.parameter_count()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == {"all": 5, "alternate": 3, "none": 0}[batch_norm]
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.1, 0.2, 0.3, 0.1]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears[0].in_features == 9 * 13 and [m.out_features for m in linears] == [*cfg.hidden_widths(), 40]
    assert cfg.macs_per_frame() == sum(m.in_features * m.out_features for m in linears)


def test_seed002_count_matches_what_the_seed_reports():
    # seed 002: "Params: 19,985.64K" for 7 × 1600, context 50, 28-d MFCC, 42 outputs
    cfg = MLPConfig(input_dim=28, context=50, num_classes=42, archetype="pencil", num_layers=7, width=1600)
    assert cfg.parameter_count() == 19_985_642


def test_dropout_alternate_and_rate_checks():
    cfg = MLPConfig(num_layers=4, width=8, dropout=0.3, dropout_alternate=True)
    assert [cfg.dropout_at(i) for i in range(4)] == [0.3, 0.0, 0.3, 0.0]
    with pytest.raises(ValueError, match="3 rates for 4 layers"):
        MLPConfig(num_layers=4, dropout=[0.1, 0.1, 0.1])


@pytest.mark.parametrize("activation", ["relu", "leakyrelu", "gelu", "silu", "softplus", "tanh"])
@pytest.mark.parametrize("init", ["default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform",
                                  "uniform"])
def test_every_activation_and_init_gives_finite_logits(activation, init):
    torch.manual_seed(0)
    model = FrameMLP(MLPConfig(input_dim=5, context=1, num_classes=7, num_layers=2, width=16,
                               activation=activation, init=init)).eval()
    logits = model(torch.randn(4, 15))
    assert logits.shape == (4, 7) and torch.isfinite(logits).all()
    if init != "default":
        assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, torch.nn.Linear))


# ---- the parameter limit -----------------------------------------------------------------------------------------

def test_fitted_width_is_the_largest_that_fits():
    cfg = MLPConfig(input_dim=28, context=35, num_classes=40, archetype="diamond", num_layers=6, param_limit=20_000_000)
    width = fit_width(cfg)
    assert width % 8 == 0
    assert cfg.parameter_count(width) <= 0.99 * 20_000_000 < cfg.parameter_count(width + 8)


def test_a_model_over_the_limit_is_refused_in_one_line():
    with pytest.raises(ParamLimitError) as error:
        resolve_model({"archetype": "cylinder", "num_layers": 8, "width": 2048}, feature_dim=28, num_classes=40,
                      context=30, param_limit=20_000_000, competition="demo-hw1p2")
    message = str(error.value)
    # 1708·2048 + 2048 + 7·(2048² + 2048) + 8·2·2048 (BatchNorm) + 2048·40 + 40
    assert "\n" not in message
    assert "32,989,224 parameters exceed the demo-hw1p2 limit of 20,000,000" in message
    assert "model.width" in message


def test_the_limit_comes_from_the_profile():
    recipe = load_recipe("hw1p2", "seed000-best")
    small = dataclasses.replace(DEMO, feature_dim=13, param_limit=5_000_000)
    params = train_frames.params(small, recipe)["model"]
    assert params["input_dim"] == 13 and params["param_limit"] == 5_000_000
    assert MLPConfig(**params).parameter_count() <= 5_000_000
    unlimited = dataclasses.replace(DEMO, param_limit=None)   # S22, S23, S25 state none: the usual 20 M
    assert MLPConfig(**train_frames.params(unlimited, recipe)["model"]).parameter_count() <= 20_000_000
    with pytest.raises(ParamLimitError, match="has no parameter limit"):
        train_frames.params(unlimited, load_recipe("hw1p2", "seed000-best", ("model.budget_if_no_limit=null",)))


def test_cli_refuses_an_over_limit_model_before_running_anything(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "train", "--task", "demo-hw1p2", "--set", "model.width=4096",
         "--set", "model.num_layers=4", "--artifacts", str(tmp_path / "a"), "--submissions", str(tmp_path / "s")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "exceed the demo-hw1p2 limit of 20,000,000" in lines[0]
    assert not (tmp_path / "a").exists()


# ---- named recipes -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMED)
def test_named_recipes_load_and_fit_the_demo_limit(name):
    recipe = load_recipe("hw1p2", name)
    model = MLPConfig(**train_frames.params(DEMO, recipe)["model"])
    assert model.parameter_count() <= DEMO.param_limit
    assert model.input_dim == DEMO.feature_dim and model.num_classes == len(DEMO.symbols)


def test_seed000_best_is_the_seed():
    recipe = load_recipe("hw1p2", "seed000-best")
    data, model, train = recipe["data"], recipe["model"], recipe["train"]
    assert data["context"] == 35 and model["activation"] == "gelu" and model["batch_norm"] == "all"
    assert model["dropout"] == 0.25
    assert (train["batch_size"], train["epochs"], train["lr"], train["optimizer"]) == (2048, 40, 0.009, "adamw")
    assert train["scheduler"]["name"] == "plateau" and train["scheduler"]["warmup_epochs"] > 0
    masking = train["masking"]
    assert (masking["freq_mask"], masking["time_mask"], masking["p_freq"], masking["p_time"]) == (6, 6, 0.5, 0.5)


def test_seed002_is_the_seed():
    recipe = load_recipe("hw1p2", "seed002")
    data, model, train = recipe["data"], recipe["model"], recipe["train"]
    assert data["context"] == 50 and model["archetype"] == "pencil" and model["num_layers"] == 7
    assert model["activation"] == "leakyrelu" and model["init"] == "kaiming_uniform"
    assert model["dropout"][0] == 0.24 and model["dropout"][-1] == 0.2
    assert (train["optimizer"], train["scheduler"]["name"], train["weight_decay"], train["batch_size"]) == \
        ("adamw", "cosine", 0.001, 2048)
    assert train["masking"]["freq_mask"] == 4 and train["masking"]["time_mask"] == 8


def test_model_keys_set_from_the_profile_or_data_are_not_silently_replaced():
    with pytest.raises(ParamLimitError, match="model.context=35: this is set from data.context"):
        train_frames.params(DEMO, load_recipe("hw1p2", "demo", ("model.context=35",)))


def test_overrides_reach_the_data_and_model_sections():
    recipe = load_recipe("hw1p2", "demo", ("model.archetype=diamond", "data.context=35"))
    model = train_frames.params(DEMO, recipe)["model"]
    assert model["archetype"] == "diamond" and model["context"] == 35
    with pytest.raises(ConfigError, match="data.contxt: unknown key \\(did you mean data.context\\?\\)"):
        load_recipe("hw1p2", "demo", ("data.contxt=3",))
    with pytest.raises(ConfigError, match="model.archetype"):
        load_recipe("hw1p2", "demo", ("model.archetype=hexagon",))


# ---- schedules and masking ---------------------------------------------------------------------------------------

def lr_trace(cfg: FrameSchedulerConfig, dev_accs: list[float], steps_per_epoch: int = 2) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = Schedule(cfg, optimizer, steps_per_epoch, steps_per_epoch * len(dev_accs), mode="max")
    trace = []
    for accuracy in dev_accs:
        for _ in range(steps_per_epoch):
            trace.append(round(optimizer.param_groups[0]["lr"], 4))
            optimizer.step()
            schedule.step_batch()
        schedule.step_epoch(accuracy)
    return trace


def test_linear_warmup_chains_into_plateau():
    cfg = FrameSchedulerConfig(name="plateau", warmup_epochs=2, warmup_start_factor=0.25, factor=0.5, patience=1)
    trace = lr_trace(cfg, [10, 20, 30, 30, 30, 30])
    assert trace[:4] == [0.25, 0.4375, 0.625, 0.8125]      # linear warmup per batch
    assert trace[4:10] == [1.0] * 6     # epoch 3 sets the plateau's best; epochs 4 and 5 bring no gain
    assert trace[10:] == [0.5] * 2      # more than `patience` epochs without a gain: halved


def test_step_and_cosine_schedules():
    assert lr_trace(FrameSchedulerConfig(name="step", step_size=2, gamma=0.1), [0] * 4)[::2] == [1.0, 1.0, 0.1, 0.1]
    cosine = lr_trace(FrameSchedulerConfig(name="cosine", min_lr=0.0), [0] * 4)
    assert cosine[0] == 1.0 and all(a > b for a, b in zip(cosine, cosine[1:])) and cosine[-1] < 0.05


def test_masks_stay_inside_each_window():
    gen = torch.Generator().manual_seed(0)
    x = torch.ones(256, 5 * 4)
    always = SpecAugmentConfig(freq_mask=2, time_mask=2, p_freq=1.0, p_time=1.0)
    masked = mask_windows(x, window=5, cfg=always, gen=gen).view(256, 5, 4)
    assert masked.shape == (256, 5, 4) and 0 < (masked == 0).float().mean() < 0.6
    never = SpecAugmentConfig(freq_mask=2, time_mask=2, p_freq=0.0, p_time=0.0)
    assert torch.equal(mask_windows(x, window=5, cfg=never, gen=gen), x)


# ---- decode pieces -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label_format, expected", [("int", ["0", "3", "39"]), ("phoneme", ["[SIL]", "AH", "ZH"])])
def test_frame_rows_one_per_frame_from_zero(label_format, expected):
    rows = frame_rows(np.array([0, 3, 39], np.int32), {"label_format": label_format, "symbols": list(DEMO.symbols)})
    assert rows == [(str(i), label) for i, label in enumerate(expected)]


def test_confusion_per_phoneme_and_majority():
    truth, predicted = np.array([0, 0, 0, 1, 2]), np.array([0, 0, 1, 1, 0])
    confusion = confusion_matrix(truth, predicted, 4)
    assert confusion[0].tolist() == [2, 1, 0, 0] and confusion.sum() == 5
    assert per_class_accuracy(confusion, ["a", "b", "c", "d"]) == {"a": 66.67, "b": 100.0, "c": 0.0, "d": None}
    assert majority_baseline(np.array([2, 2, 1]), truth, 4) == (2, 20.0)


def test_ensemble_averages_the_posteriors_of_the_best_checkpoints(tmp_path):
    from pipeline.data.frames import FrameWindows
    from pipeline.data.store import FeatureStore
    from pipeline.stages.decode_frames import averaged_posteriors, ensemble_members
    from pipeline.training.checkpoints import model_checkpoint

    rng = np.random.default_rng(0)
    meta = {"dim": 3, "partition": "dev", "label_kind": "frame", "symbols": ["a", "b", "c", "d"],
            "normalization": "cmvn"}
    store = FeatureStore.write(tmp_path / "dev", ["u0", "u1"], [6, 4], (rng.normal(size=(n, 3)) for n in (6, 4)),
                               (rng.integers(0, 4, n) for n in (6, 4)), meta)
    cfg = MLPConfig(input_dim=3, context=1, num_classes=4, num_layers=1, width=8)
    checkpoints = tmp_path / "train" / "checkpoints"
    checkpoints.mkdir(parents=True)
    models = []
    for seed, name in enumerate(["epoch002-acc50.00.pt", "epoch001-acc40.00.pt", "epoch003-acc30.00.pt"]):
        torch.manual_seed(seed)
        models.append(FrameMLP(cfg).eval())
        saved = model_checkpoint(models[-1], cfg, seed, {}, "mlp")
        saved["data"] = {"context": 1, "padding": "utterance", "subset": 1.0}
        torch.save(saved, checkpoints / name)
    index = [{"file": n, "epoch": e, "dev_acc": a} for n, e, a in [("epoch002-acc50.00.pt", 2, 50.0),
                                                                   ("epoch001-acc40.00.pt", 1, 40.0),
                                                                   ("epoch003-acc30.00.pt", 3, 30.0)]]
    (checkpoints / "index.json").write_text(json.dumps({"metric": "dev_acc", "checkpoints": index}))

    class Run:  # what ensemble_members reads from a StageRun
        params = {"ensemble": 2}
        inputs = {"train": type("A", (), {"dir": tmp_path / "train"})(), "select": None}

    members = ensemble_members(Run)
    assert [p.name for p in members] == ["epoch002-acc50.00.pt", "epoch001-acc40.00.pt"]
    averaged = averaged_posteriors(members, {"dev": store}, batch_size=3)[0]["dev"]
    x = torch.from_numpy(FrameWindows(store, 1).gather(np.arange(10)))
    with torch.no_grad():
        expected = (torch.softmax(models[0](x), -1) + torch.softmax(models[1](x), -1)) / 2
    assert np.allclose(averaged, expected.numpy(), atol=1e-6)
    Run.params = {"ensemble": 4}
    with pytest.raises(Exception, match="decode.ensemble=4 needs that many"):
        ensemble_members(Run)
