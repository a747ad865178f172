"""Seed 003's dilated-conv CTC model and its ablation knobs: dilations and receptive field, the BatchNorm toggle,
padding that never changes the loss (dynamic vs fixed-length batches), the recipe's one-line errors, learning,
checkpoints, and the named configs."""
from __future__ import annotations

import json

import pytest
import torch

from pipeline.config import ConfigError, load_recipe
from pipeline.models.ctc_rnn import CTCRNN
from pipeline.models.dilated_conv import DilatedConvCTC, MaskedBatchNorm1d
from pipeline.models.load import load_model
from pipeline.stages.train_ctc import label
from pipeline.tasks.ctc_recipe import CTCRNNConfig, CTCTrainConfig, DilatedConvConfig
from pipeline.training import loop
from pipeline.training.batching import UtteranceDataset
from pipeline.training.ctc import CTCTask, ctc_loss
from pipeline.training.synthetic import make_synthetic_store

TINY = dict(input_dim=28, channels=16, kernel_size=3, max_dilation=4, num_stacks=2, dropout=0.0, head_hidden=24)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return make_synthetic_store(root / "train", 16, seed=1), make_synthetic_store(root / "dev", 6, seed=2, partition="dev")


def test_each_stack_doubles_the_dilation_up_to_the_maximum():
    cfg = DilatedConvConfig(**{**TINY, "max_dilation": 64, "num_stacks": 3})
    assert cfg.dilations() == [1, 2, 4, 8, 16, 32, 64] * 3
    model = DilatedConvCTC(cfg)
    assert [block.conv.dilation[0] for block in model.blocks] == cfg.dilations()
    # kernel 3: each block adds 2·dilation frames; a 1×1 input projection adds none
    assert model.receptive_field() == 1 + 3 * 2 * 127
    assert model.describe() == {"receptive_field_frames": 763, "receptive_field_ms": 7630.0, "residual_blocks": 21}


@pytest.mark.parametrize("subsample", [1, 2, 4])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_the_receptive_field_is_the_span_of_inputs_an_output_depends_on(subsample, batchnorm):
    torch.manual_seed(0)
    model = DilatedConvCTC(DilatedConvConfig(**{**TINY, "subsample": subsample, "batchnorm": batchnorm})).eval()
    rf = model.receptive_field()
    T = 4 * rf
    x = torch.randn(1, T, 28, requires_grad=True)
    log_probs, out_lengths = model(x, torch.tensor([T]))
    log_probs[0, out_lengths[0] // 2].sum().backward()
    touched = (x.grad[0].abs().sum(-1) > 0).nonzero().flatten()
    assert touched.max() - touched.min() + 1 == rf


def test_batchnorm_is_a_module_before_each_block_or_none():
    on = DilatedConvCTC(DilatedConvConfig(**{**TINY, "batchnorm": True}))
    off = DilatedConvCTC(DilatedConvConfig(**{**TINY, "batchnorm": False}))
    norms = lambda m: [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm1d)]  # noqa: E731
    assert len(norms(on)) == len(on.blocks) == 6 and all(isinstance(n, MaskedBatchNorm1d) for n in norms(on))
    assert norms(off) == []
    assert sum(p.numel() for p in on.parameters()) == sum(p.numel() for p in off.parameters()) + 6 * 2 * 16


@pytest.mark.parametrize("training", [False, True])
def test_padding_never_changes_an_utterance_even_in_training_mode(training):
    """The BatchNorm takes its statistics over real frames only: garbage or extra padding changes nothing."""
    torch.manual_seed(0)
    model = DilatedConvCTC(DilatedConvConfig(**{**TINY, "subsample": 2})).train(training)
    a, b = torch.randn(37, 28), torch.randn(20, 28)
    tight = torch.zeros(2, 37, 28)
    tight[0], tight[1, :20] = a, b
    loose = torch.full((2, 90, 28), 5.0)
    loose[0, :37], loose[1, :20] = a, b
    lengths = torch.tensor([37, 20])
    out_tight, len_tight = model(tight, lengths)
    out_loose, len_loose = model(loose, lengths)
    assert torch.equal(len_tight, len_loose)
    for i, n in enumerate(len_tight.tolist()):
        assert torch.allclose(out_tight[i, :n], out_loose[i, :n], atol=1e-5)


@pytest.mark.parametrize("arch", ["dilated_conv", "ctc_rnn"])
def test_fixed_length_and_dynamic_padding_give_the_same_loss(stores, arch):
    """Seed 003's padding ablation: the padded frames are masked out of the loss either way (eval mode: the
    ResNet-BiLSTM's conv BatchNorm counts padded frames in training, which is the ablation's point)."""
    train, dev = stores
    model_cfg = (DilatedConvConfig(**TINY) if arch == "dilated_conv" else
                 CTCRNNConfig(input_dim=28, embed="conv", embed_channels=16, embed_layers=2, lstm_hidden=16,
                              lstm_layers=1, head_hidden=16))
    losses = {}
    for padding in ("batch", "fixed"):
        task = CTCTask(model_cfg, CTCTrainConfig(batch_size=4, padding=padding), train, dev)
        torch.manual_seed(0)
        model = task.build_model().eval()
        batch = task.collate(task.train_store)([UtteranceDataset(task.train_store)[i] for i in (0, 3, 5)])
        x, y, x_lengths, y_lengths = batch
        losses[padding] = (x.shape[1], ctc_loss(*model(x, x_lengths), y, y_lengths).item())
    assert losses["fixed"][0] == int(max(train.lengths)) > losses["batch"][0]
    assert losses["fixed"][1] == pytest.approx(losses["batch"][1], rel=1e-5)


@pytest.mark.parametrize("override, message", [
    ("model.max_dilation=48", "model: max_dilation must be a power of 2 (got 48)"),
    ("model.kernel_size=4", "model: kernel_size must be odd (got 4)"),
    ("model.num_stack=6", "model.num_stack: unknown key for arch dilated_conv (did you mean model.num_stacks?)"),
    ("model.subsample=3", "model.subsample"),
    ("model.arch=wavenet", "model.arch: arch must be one of: ctc_rnn, dilated_conv"),
    ("model.input_dim=13", "model.input_dim: input_dim is set from the competition profile"),
    ("train.padding=both", "train.padding"),
])
def test_bad_dilated_recipes_are_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        load_recipe("hw3p2", "seed003-demo", (override,))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_seed003_configs_build_and_name_their_folders():
    real = load_recipe("hw3p2", "seed003-dilated", ("model.max_dilation=128", "model.num_stacks=6"))
    assert real["model"]["arch"] == "dilated_conv" and real["train"]["optimizer"] == "adamax"
    model = DilatedConvCTC(DilatedConvConfig(**real["model"], input_dim=28))
    assert len(model.blocks) == 8 * 6
    demo = load_recipe("hw3p2", "seed003-demo", ("train.epochs=1", "train.quick=0.2"))
    assert label({"model": demo["model"], "train": demo["train"]}) == "dil16x2-c128-bn-ss4-e1-quick0.2"
    assert label({"model": load_recipe("hw3p2", "demo")["model"], "train": demo["train"]}).startswith("resnet128x2")


def test_the_dilated_model_learns_and_reloads_from_its_checkpoint(stores, tmp_path):
    train, _ = stores
    task = CTCTask(DilatedConvConfig(**{**TINY, "channels": 32, "subsample": 2}),
                   CTCTrainConfig(epochs=12, batch_size=2, lr=5e-3, seed=3, scheduler={"name": "none"}), train, train)
    metrics = loop.train(task, tmp_path, tracking="off", run_name="t", progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert metrics["best_dev_lev"] < 0.7 * metrics["dev_blank_lev"]
    assert metrics["receptive_field_frames"] == task.model_facts["receptive_field_frames"] > 0
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["arch"] == "dilated_conv" and record["metric"] == "dev_lev" and record["direction"] == "min"

    model = load_model(metrics["best_checkpoint"])
    assert isinstance(model, DilatedConvCTC) and not isinstance(model, CTCRNN)
    x, lengths = torch.randn(2, 40, 28), torch.tensor([40, 31])
    again = task.build_model()
    again.load_state_dict(torch.load(metrics["best_checkpoint"], weights_only=False)["state_dict"])
    assert torch.allclose(model(x, lengths)[0], again.eval()(x, lengths)[0], atol=1e-6)


def test_one_real_frame_in_training_uses_the_running_statistics():
    norm = MaskedBatchNorm1d(4).train()
    x = torch.randn(1, 4, 3)
    mask = torch.tensor([[True, False, False]])
    out = norm(x, mask)
    expected = (x[0, :, 0] - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    assert torch.allclose(out[0, :, 0], expected * norm.weight + norm.bias, atol=1e-6)
    assert torch.equal(out[0, :, 1:], torch.zeros(4, 2))
