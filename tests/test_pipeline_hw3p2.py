"""The whole hw3p2 pipeline on a tiny Kaggle-layout replica with a tiny model (fast), plus select averaging."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from pipeline.config import ConfigError, load_recipe
from pipeline.engine import Pipeline
from pipeline.stages.select import average_state_dicts
from pipeline.submission import read_ledger
from pipeline.tasks import stages_for
from tests.kaggle_replica import make_replica

TINY = ("model.embed_channels=16", "model.lstm_hidden=16", "model.lstm_layers=1", "model.head_hidden=32",
        "train.epochs=3", "train.keep_top_k=3", "decode.beam=4")


def hw3p2_pipeline(tmp_path, profile, *overrides):
    recipe = load_recipe("hw3p2", "demo", TINY + overrides)
    return Pipeline(profile, recipe, stages_for("hw3p2"), artifacts_root=tmp_path / "artifacts",
                    submissions_root=tmp_path / "submissions", options={"wandb": "off", "progress": False},
                    config_name="demo", overrides=TINY + overrides)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hw3p2")
    profile = make_replica(tmp_path / "competition")
    pipeline = hw3p2_pipeline(tmp_path, profile)
    pipeline.run()
    return tmp_path, profile, pipeline


def test_every_stage_completes_and_the_csv_matches_the_sample(finished):
    _, _, pipeline = finished
    assert [line.state for line in pipeline.status()] == ["fresh"] * 7
    with open(pipeline.plan["csv"].dir / "submission.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["index", "label"] and [r[0] for r in rows[1:]] == [str(i) for i in range(5)]


def test_decode_reports_greedy_beam_and_oracle(finished):
    _, _, pipeline = finished
    metrics = pipeline.plan["decode"].artifact.manifest["metrics"]
    assert {"dev_greedy", "dev_beam", "dev_oracle"} <= set(metrics)
    assert metrics["dev_oracle"] <= metrics["dev_beam"] + 1e-9
    cache = pipeline.artifacts_root / "demo-hw3p2" / "logprobs" / pipeline.plan["select"].key[:16]
    assert (cache / "dev.pt").exists() and (cache / "test.pt").exists()


def test_ledger_row_names_the_run(finished):
    tmp_path, _, pipeline = finished
    rows = read_ledger(tmp_path / "submissions")
    assert len(rows) == 1
    assert rows[0]["train_key"] == pipeline.plan["train"].key[:12]
    assert rows[0]["decode_params"].startswith("beam=4")
    assert float(rows[0]["public_score"]) >= 0


def test_new_beam_only_reruns_decode_and_after(finished):
    tmp_path, profile, _ = finished
    wider = hw3p2_pipeline(tmp_path, profile, "decode.beam=6")
    states = {line.stage: line for line in wider.status()}
    assert [states[s].state for s in ("download", "normalize", "train", "select")] == ["fresh"] * 4
    assert states["decode"].state == "stale" and "param beam: 4 → 6" in states["decode"].reason
    assert states["csv"].state == "stale" and "upstream decode changed" in states["csv"].reason
    wider.run(start="decode", stop="csv")
    beams = sorted(p.name.split("-")[0] for p in (wider.artifacts_root / "demo-hw3p2" / "decode").iterdir()
                   if p.is_dir())
    assert beams == ["beam4", "beam6"]


def test_average_of_top_checkpoints(finished):
    tmp_path, profile, pipeline = finished
    averaged = hw3p2_pipeline(tmp_path, profile, "select.method=average-best", "select.n=2")
    averaged.run(only="select")
    checkpoints = pipeline.plan["train"].dir / "checkpoints"
    index = json.loads((checkpoints / "index.json").read_text())["checkpoints"][:2]
    sources = [torch.load(checkpoints / e["file"], weights_only=False)["state_dict"] for e in index]
    model = torch.load(averaged.plan["select"].dir / "model.pt", weights_only=False)["state_dict"]
    for name, tensor in model.items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, (sources[0][name] + sources[1][name]) / 2, atol=1e-6), name
        else:
            assert torch.equal(tensor, (sources[0][name] + sources[1][name]) // 2), name


def test_model_file_records_its_normalization(finished):
    _, _, pipeline = finished
    model = torch.load(pipeline.plan["select"].dir / "model.pt", weights_only=False)
    assert model["normalization"]["normalize_key"] == pipeline.plan["normalize"].key
    assert model["normalization"]["method"] == "cmvn"


def test_integer_buffers_average_by_floor_division():
    out = average_state_dicts([{"n": torch.tensor(3), "w": torch.tensor([1.0])},
                               {"n": torch.tensor(4), "w": torch.tensor([2.0])}])
    assert out["n"].item() == 3 and out["n"].dtype == torch.int64 and out["w"].item() == 1.5


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "train.lrr: unknown key (did you mean train.lr?)"),
    ("train.epochs=many", "train.epochs"),
    ("decode.beam=0", "decode.beam"),
    ("bogus.x=1", "unknown section 'bogus'"),
    ("train.lr", "expected key=value"),
])
def test_bad_overrides_are_one_clear_line(override, message):
    with pytest.raises(ConfigError) as error:
        load_recipe("hw3p2", "demo", (override,))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_numbers_in_overrides_are_parsed():
    recipe = load_recipe("hw3p2", "demo", ("train.lr=3e-3", "train.epochs=7"))
    assert recipe["train"]["lr"] == 0.003 and recipe["train"]["epochs"] == 7


@pytest.mark.parametrize("message", ["[v2] lr 3e-3", "note #3", "2024", "yes", 'say "hi"'])
def test_submit_messages_are_kept_verbatim(message):
    recipe = load_recipe("hw3p2", "demo", (f"submit.message={json.dumps(message)}",))
    assert recipe["submit"]["message"] == message


def test_unreadable_recipe_is_one_line(tmp_path):
    folder = tmp_path / "recipe.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot be read"):
        load_recipe("hw3p2", str(folder))
