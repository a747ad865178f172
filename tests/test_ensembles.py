"""Decode ensembles of train runs (decode.ensemble_runs, `asrpipe decode --ensemble`): hw3p2 averages CTC
probabilities, hw1p2 posteriors; members are named by key, resolved to complete runs, and refused with one line
when they cannot be averaged (other features, another frame rate).

    .venv/bin/python -m pytest tests/test_ensembles.py -q
"""
from __future__ import annotations

import json

import pytest
import torch

from pipeline.config import ConfigError
from pipeline.decoding.ensemble import mean_log_probs
from pipeline.engine import EngineError
from pipeline.runs import resolve
from tests.test_pipeline_contract import finished_fixture, variant

finished_ctc = finished_fixture("demo-hw3p2")
finished_frames = finished_fixture("demo-hw1p2")


def _train_key(pipeline) -> str:
    return pipeline.plan["train"].key


def _ensemble(finished, *members, stop="csv"):
    """The finished run decoded with other runs' keys (as the CLI resolves them) averaged in."""
    tmp_path, profile, _ = finished
    keys = resolve(tmp_path / "artifacts", profile.name, [key[:8] for key in members])
    return variant(finished, f"decode.ensemble_runs={json.dumps(keys)}", start="decode", stop=stop)[1]


def test_ctc_ensemble_of_two_seeds_reports_each_member(finished_ctc):
    _, _, own = finished_ctc
    _, other = variant(finished_ctc, "train.seed=7", stop="decode")
    assert _train_key(other) != _train_key(own)
    pipeline = _ensemble(finished_ctc, _train_key(other))
    decode = pipeline.plan["decode"]
    assert decode.dir.name.startswith("beam4-asrpipe-ens2-")
    metrics = decode.artifact.manifest["metrics"]
    assert [m["train_key"] for m in metrics["members"]] == [_train_key(own)[:8], _train_key(other)[:8]]
    alone = own.plan["decode"].artifact.manifest["metrics"]
    assert metrics["members"][0]["dev_beam"] == pytest.approx(alone["dev_beam"])  # the own run, alone
    assert (pipeline.plan["csv"].dir / "submission.csv").exists()
    assert decode.key != own.plan["decode"].key


def test_own_run_named_in_its_ensemble_changes_nothing(finished_ctc):
    from pipeline.build import without_own_run

    _, _, own = finished_ctc
    named = _ensemble(finished_ctc, _train_key(own), stop="decode")
    assert named.plan["decode"].dir.name.startswith("beam4-asrpipe-ens2-")  # as the recipe says ...
    assert without_own_run(named).plan["decode"].key == own.plan["decode"].key  # ... and as the CLI plans it


def test_member_log_probs_share_the_members_own_cache(finished_ctc):
    """A member's log-probs live under its own select key: the run's own decode already filled that cache."""
    root, profile, _ = finished_ctc
    _, other = variant(finished_ctc, "train.seed=7", stop="decode")
    cache = root / "artifacts" / profile.name / "logprobs" / other.plan["select"].key[:16]
    stamp = (cache / "dev.pt").stat().st_mtime_ns
    _ensemble(finished_ctc, _train_key(other))
    assert (cache / "dev.pt").stat().st_mtime_ns == stamp  # read, not recomputed


def test_ctc_ensemble_refuses_another_frame_rate(finished_ctc):
    _, other = variant(finished_ctc, "model.downsample=1", stop="train")
    with pytest.raises(EngineError, match="same frame rate") as error:
        _ensemble(finished_ctc, _train_key(other), stop="decode")
    assert "\n" not in str(error.value)


def test_ensemble_refuses_runs_on_other_features(finished_ctc):
    _, other = variant(finished_ctc, "normalize.method=global", stop="train")
    with pytest.raises(EngineError, match="trained on other features"):
        _ensemble(finished_ctc, _train_key(other), stop="decode")


def test_frame_ensemble_of_two_seeds(finished_frames):
    _, _, own = finished_frames
    _, other = variant(finished_frames, "train.seed=3", stop="train")
    pipeline = _ensemble(finished_frames, _train_key(other))
    metrics = pipeline.plan["decode"].artifact.manifest["metrics"]
    assert pipeline.plan["decode"].dir.name.startswith("argmax-runs2-")
    assert len(metrics["members_dev_acc"]) == 2
    assert metrics["members_dev_acc"][0] == pytest.approx(own.plan["decode"].artifact.manifest["metrics"]["dev_acc"],
                                                          abs=1e-3)
    assert metrics["members"][1] == f"run {_train_key(other)[:8]}"


def test_references_resolve_to_complete_runs_or_one_line(finished_ctc, tmp_path):
    root, profile, own = finished_ctc
    artifacts = root / "artifacts"
    key = _train_key(own)
    assert resolve(artifacts, profile.name, [key[:6], own.plan["train"].dir.name, key]) == [key]
    with pytest.raises(ValueError, match="no train run 'zzzz9999'.*asrpipe runs"):
        resolve(artifacts, profile.name, ["zzzz9999"])
    unfinished = artifacts / profile.name / "train" / "resnet-unfinished-abcd1234"
    unfinished.mkdir()
    try:
        with pytest.raises(ValueError, match="is not complete"):
            resolve(artifacts, profile.name, ["abcd1234"])
    finally:
        unfinished.rmdir()


def test_cli_names_the_bad_reference_in_one_line_and_other_commands_wait(tmp_path):
    from pipeline.build import _resolve_runs

    with pytest.raises(ConfigError, match="decode.ensemble_runs: no train run 'beef'"):
        _resolve_runs(["beef"], tmp_path, "demo-hw3p2")
    assert _resolve_runs(["beef"], tmp_path, "demo-hw3p2", strict=False) == ["beef"]  # train/status still plan


def test_unresolved_reference_is_refused_by_the_decode_stage(finished_ctc):
    with pytest.raises(EngineError, match="decode.ensemble_runs: no train run 'beef'"):
        variant(finished_ctc, 'decode.ensemble_runs=["beef"]', start="decode", stop="decode")


def test_unquoted_numeric_key_is_one_line():
    from pipeline.config import load_recipe

    with pytest.raises(ConfigError, match="quote run keys"):
        load_recipe("hw3p2", "demo", ("decode.ensemble_runs=[01234567]",))


def test_mean_is_the_log_of_the_mean_probability():
    a = torch.tensor([[0.5, 0.5]]).log()
    b = torch.tensor([[0.9, 0.1]]).log()
    (mean,) = mean_log_probs([[a], [b]], ["aaaa", "bbbb"])
    assert mean.exp()[0].tolist() == pytest.approx([0.7, 0.3])
    with pytest.raises(EngineError, match="run bbbb gives"):
        mean_log_probs([[a], [b[:, :1]]], ["aaaa", "bbbb"])
