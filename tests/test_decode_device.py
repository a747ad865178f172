"""One decode path: device choice (--device auto|cpu|cuda), length-sorted batches scattered back into order, and
load_model onto a device. CPU only: CUDA is simulated as absent."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.config import load_recipe
from pipeline.decoding.batches import length_batches, model_device, pad_batch, scatter
from pipeline.device import DeviceError, resolve_device
from pipeline.engine import Pipeline
from pipeline.models.ctc_rnn import CTCRNN, CTCRNNConfig
from pipeline.tasks import stages_for
from pipeline.models.load import load_model
from pipeline.training.checkpoints import model_checkpoint
from tests.kaggle_replica import make_replica

TINY_MODEL = dict(input_dim=28, embed="conv", embed_channels=8, embed_layers=1, downsample=1, lstm_hidden=8,
                  lstm_layers=1, head_hidden=16)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ---- length batches -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size,max_frames", [(3, None), (None, 200), (4, 150), (1, None), (100, 10_000)])
def test_scatter_restores_the_original_order_within_the_budget(batch_size, max_frames):
    rng = np.random.default_rng(batch_size or 0)
    lengths = rng.permutation(np.concatenate([rng.integers(1, 120, 40), [120, 120, 7, 7]]))  # ties too
    batches = length_batches(lengths, batch_size, max_frames)

    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))                        # every utterance once
    assert [int(lengths[i]) for i in flat] == sorted(int(x) for x in lengths)  # in length order
    for b in batches:
        assert batch_size is None or len(b) <= batch_size
        assert max_frames is None or len(b) * max(int(lengths[i]) for i in b) <= max_frames or len(b) == 1

    results = [[(i, int(lengths[i]) * 2) for i in b] for b in batches]       # what a model returns per row
    assert scatter(batches, results) == [(i, int(x) * 2) for i, x in enumerate(lengths)]


def test_an_utterance_over_the_frame_budget_gets_a_batch_of_its_own():
    assert length_batches([5, 50, 6, 7], max_frames=20) == [[0, 2], [3], [1]]
    assert length_batches([], batch_size=4) == []
    with pytest.raises(ValueError, match="batch_size and/or max_frames"):
        length_batches([1, 2])


def test_scatter_refuses_results_that_do_not_cover_every_utterance():
    with pytest.raises(ValueError, match="returned 1 results"):
        scatter([[0, 1]], [["a"]])
    with pytest.raises(ValueError, match="cover 2 of 3"):
        scatter([[0, 2]], [["a", "c"]], total=3)


def test_pad_batch_pads_and_moves_to_the_device():
    feats = [np.ones((3, 2), np.float32), np.ones((5, 2), np.float64)]
    padded, lengths = pad_batch(feats)
    assert padded.shape == (2, 5, 2) and padded.dtype == torch.float32 and lengths.tolist() == [3, 5]
    assert float(padded[0, 3:].abs().sum()) == 0.0
    padded, lengths = pad_batch(feats, "meta")
    assert padded.device.type == "meta" and lengths.device.type == "meta"


# ---- device choice and load_model -----------------------------------------------------------------------------------


def test_device_choice(no_cuda):
    assert resolve_device(None) == torch.device("cpu") and resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"--device cuda: CUDA is not available here .*use --device cpu or auto"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="expected one of auto | cpu | cuda"):
        resolve_device("tpu")


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_load_model_places_parameters_on_the_device(tmp_path, device):
    cfg = CTCRNNConfig(**TINY_MODEL)
    torch.save(model_checkpoint(CTCRNN(cfg), cfg, 1, {}, "ctc_rnn"), tmp_path / "model.pt")
    model = load_model(tmp_path / "model.pt", device)
    assert not model.training
    assert {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()} == {device}
    assert model_device(model).type == device
    assert model_device(load_model(tmp_path / "model.pt")).type == "cpu"  # default: CPU, as before


def test_log_probs_in_store_order_match_one_utterance_at_a_time(tmp_path):
    from pipeline.stages.decode_ctc import compute_log_probs
    from pipeline.training.synthetic import make_synthetic_store

    store = make_synthetic_store(tmp_path / "dev", 9, seed=4, partition="dev")
    torch.manual_seed(0)
    model = CTCRNN(CTCRNNConfig(**TINY_MODEL)).eval()
    batched = compute_log_probs(model, store, 4, "log-probs")
    assert len(set(int(n) for n in store.lengths)) > 1
    with torch.inference_mode():
        for i, log_probs in enumerate(batched):
            alone, alone_len = model(*pad_batch([store.features(i)]))
            assert torch.allclose(log_probs, alone[0, : alone_len[0]], atol=1e-5)


# ---- the CLI and the decode stage -----------------------------------------------------------------------------------


def test_cli_device_cuda_without_cuda_is_one_line_and_writes_nothing(tmp_path, no_cuda):
    from cli.main import app

    result = CliRunner().invoke(app, ["decode", "--task", "demo-hw3p2", "--device", "cuda",
                                      "--artifacts", str(tmp_path / "artifacts")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "CUDA is not available" in lines[0] and "--device cpu" in lines[0]
    assert not (tmp_path / "artifacts").exists()


TINY = ("model.embed_channels=8", "model.lstm_hidden=8", "model.lstm_layers=1", "model.head_hidden=16",
        "train.epochs=1", "train.keep_top_k=1", "select.method=best", "decode.beam=3")


def test_decode_on_cpu_equals_the_default_and_cuda_without_cuda_fails_cleanly(tmp_path, monkeypatch):
    profile = make_replica(tmp_path / "competition")

    def pipeline(**options):
        return Pipeline(profile, load_recipe("hw3p2", "demo", TINY), stages_for("hw3p2"),
                        artifacts_root=tmp_path / "artifacts", submissions_root=tmp_path / "submissions",
                        options={"wandb": "off", "progress": False, **options}, config_name="demo", overrides=TINY)

    default = pipeline()
    default.run(stop="decode")
    decode = default.plan["decode"]
    outputs = {name: json.loads((decode.dir / name).read_text()) for name in ("test_hypotheses.json",
                                                                              "dev_results.json")}
    manifest = decode.artifact.manifest
    assert manifest["metrics"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert manifest["metrics"]["logprobs_computed"] == ["dev", "test", "heldout"]   # the demo's held-out accents
    cache = tmp_path / "artifacts" / profile.name / "logprobs" / default.plan["select"].key[:16]

    on_cpu = pipeline(device="cpu")
    assert on_cpu.plan["decode"].key == decode.key       # the device is no part of the cache key
    assert [line.state for line in on_cpu.status()][:5] == ["fresh"] * 5

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        pipeline(device="cuda").run(only="decode", force=True)
    assert not decode.artifact.complete

    for path in cache.glob("*.pt"):  # recompute the log-probs too, on the CPU this time
        path.unlink()
    on_cpu.run(only="decode")
    assert decode.artifact.complete
    for name, expected in outputs.items():
        assert json.loads((decode.dir / name).read_text()) == expected
    metrics = decode.artifact.manifest["metrics"]
    assert metrics["device"] == "cpu" and metrics["logprobs_computed"] == ["dev", "test", "heldout"]
    assert {k: metrics[k] for k in ("dev_greedy", "dev_beam", "dev_oracle")} == \
        {k: manifest["metrics"][k] for k in ("dev_greedy", "dev_beam", "dev_oracle")}
