"""The pipeline contract every task family keeps, checked once per family on a tiny Kaggle-layout replica: download →
normalize → train → select → decode → csv → submit completes and a rerun does nothing; the CSV has the sample
submission's header and ids, passes validation and is judged locally into one ledger row naming the run; checkpoints
rank by the profile's metric and direction; the model file records its normalization; a changed decode param reruns
only decode and after (status says why); select averages the top checkpoints.

The run (and each variant of it) happens once per family per session: `finished_fixture` and `variant` serve
the family files (tests/test_{frames,ctc,seq2seq}_pipeline.py), which hold only what is specific to one family.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass

import pytest
import torch

from pipeline.config import load_recipe
from pipeline.engine import Pipeline
from pipeline.submission import SubmissionError, judge_locally, read_ledger, read_rows, validate_submission
from pipeline.tasks import stages_for
from tests.kaggle_replica import make_replica

STAGES = ["download", "normalize", "train", "select", "decode", "csv", "submit"]
# hw3p2: the demo recipe shrunk (3 epochs, top 3 kept: enough checkpoints for averaging; beam 4), selecting the best
# checkpoint as the other families do (the averaging methods are variants below)
CTC_TINY = ("model.embed_channels=16", "model.lstm_hidden=16", "model.lstm_layers=1", "model.head_hidden=32",
            "train.epochs=3", "train.keep_top_k=3", "decode.beam=4", "select.method=best")


@dataclass(frozen=True)
class Family:
    task: str
    config: str
    overrides: tuple[str, ...]
    decode_change: tuple[str, object]  # a decode param and a new value for it
    dev_metric: str                    # the decode metric the ledger reports
    bad_label: tuple[str, str]         # a label outside the competition's alphabet, and the part validation names


FAMILIES = {
    "demo-hw1p2": Family("hw1p2", "tiny", (), ("ensemble", 2), "dev_acc", ("SIL", "SIL")),  # S22 spelling of [SIL]
    "demo-hw3p2": Family("hw3p2", "demo", CTC_TINY, ("beam", 6), "dev_beam", ("ab c", " ")),  # " " is the blank
    "demo-hw4p2": Family("hw4p2", "tiny", (), ("beam", 3), "dev_beam", ("hello", "h")),  # uppercase only
}


def family_pipeline(tmp_path, profile, *overrides) -> Pipeline:
    family = FAMILIES[profile.name]
    overrides = family.overrides + overrides
    return Pipeline(profile, load_recipe(family.task, family.config, overrides), stages_for(family.task),
                    artifacts_root=tmp_path / "artifacts", submissions_root=tmp_path / "submissions",
                    options={"wandb": "off", "progress": False}, config_name=family.config, overrides=overrides)


_RUNS: dict = {}
_VARIANTS: dict = {}


def finished_run(tmp_path_factory, name: str):
    """(tmp_path, profile, pipeline) after the whole pipeline ran on a default-sized replica; once per session."""
    if name not in _RUNS:
        tmp_path = tmp_path_factory.mktemp(name)
        profile = make_replica(tmp_path / "competition", name)
        pipeline = family_pipeline(tmp_path, profile)
        pipeline.run()
        _RUNS[name] = tmp_path, profile, pipeline
    return _RUNS[name]


def variant(finished, *overrides, **run):
    """({stage: status line} before running, the pipeline after `run(**run)`) for the finished run with overrides;
    once per session, so whichever test asks first sees the status before it ran."""
    tmp_path, profile, _ = finished
    key = (profile.name, overrides, tuple(sorted(run.items())))
    if key not in _VARIANTS:
        changed = family_pipeline(tmp_path, profile, *overrides)
        before = {line.stage: line for line in changed.status()}
        changed.run(**run)
        _VARIANTS[key] = before, changed
    return _VARIANTS[key]


def finished_fixture(name: str):
    """The module-scoped `finished` fixture of one family's own test file: the shared run of profile `name`."""
    @pytest.fixture(scope="module")
    def finished(tmp_path_factory):
        return finished_run(tmp_path_factory, name)
    return finished


@pytest.fixture(scope="module", params=list(FAMILIES))
def finished(request, tmp_path_factory):
    return finished_run(tmp_path_factory, request.param)


def sample_path(pipeline):
    download = pipeline.plan["download"]
    return download.dir / download.artifact.manifest["metrics"]["sample_submission"]


def checkpoint_index(pipeline) -> dict:
    return json.loads((pipeline.plan["train"].dir / "checkpoints" / "index.json").read_text())


def test_every_stage_completes_and_a_rerun_does_nothing(finished):
    tmp_path, profile, pipeline = finished
    assert pipeline.names() == STAGES
    assert [line.state for line in pipeline.status()] == ["fresh"] * len(STAGES)
    runs = {name: pipeline.plan[name].artifact.run_id for name in STAGES}
    assert all(runs.values())
    again = family_pipeline(tmp_path, profile)
    assert {name: again.plan[name].key for name in STAGES} == {name: pipeline.plan[name].key for name in STAGES}
    again.run()
    assert {name: again.plan[name].artifact.run_id for name in STAGES} == runs
    assert len(read_ledger(tmp_path / "submissions")) == 1


def test_csv_has_the_sample_submissions_header_and_ids_and_validates(finished):
    _, profile, pipeline = finished
    submission = pipeline.plan["csv"].dir / "submission.csv"
    header, rows = read_rows(submission)
    sample_header, sample_rows = read_rows(sample_path(pipeline))
    assert header == sample_header == list(profile.csv_columns)
    assert [r[0] for r in rows] == [r[0] for r in sample_rows] == [str(i) for i in range(len(rows))]
    assert len(rows) == pipeline.plan["csv"].artifact.manifest["metrics"]["rows"] > 0
    assert validate_submission(submission, sample_path(pipeline), profile) == rows


def test_validation_refuses_a_label_outside_the_alphabet(finished, tmp_path):
    _, profile, pipeline = finished
    label, named = FAMILIES[profile.name].bad_label
    header, rows = read_rows(pipeline.plan["csv"].dir / "submission.csv")
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows[:1], [rows[1][0], label], *rows[2:]])
    with pytest.raises(SubmissionError, match=re.escape(f"line 3 {header[1]} contains {named!r}")):
        validate_submission(bad, sample_path(pipeline), profile)


def test_ledger_row_names_the_run_and_holds_the_local_judges_score(finished):
    tmp_path, profile, pipeline = finished
    rows = read_ledger(tmp_path / "submissions")
    assert len(rows) == 1
    row = rows[0]
    assert (row["competition"], row["target"], row["status"]) == (profile.name, "local", "scored")
    assert [row[f"{name}_key"] for name in ("train", "decode", "csv")] == [
        pipeline.plan[name].key[:12] for name in ("train", "decode", "csv")]
    assert row["csv_sha256"] == pipeline.plan["csv"].artifact.manifest["metrics"]["sha256"]
    decode_metrics = pipeline.plan["decode"].artifact.manifest["metrics"]
    assert float(row["dev_metric"]) == decode_metrics[FAMILIES[profile.name].dev_metric]
    params = pipeline.plan["decode"].params
    decode = pipeline.recipe["decode"]
    assert all(f"{key}={value}" in row["decode_params"].split() for key, value in decode.items() if key in params)
    off = {key for key in decode if key not in params}  # features that are off stay out of the key and the ledger
    assert off <= {"ensemble_runs", "lm_order", "alpha", "beta", "mode", "ctc_weight", "length_bonus", "tta_warp",
                   "smooth"}
    assert not decode.get("ensemble_runs") and (not {"lm_order", "alpha", "beta"} & off or not decode.get("lm_order"))
    assert decode.get("mode", "attention") == "attention" and not decode.get("ctc_weight") and not decode.get(
        "length_bonus")
    scores = judge_locally(pipeline.plan["csv"].dir / "submission.csv", profile)
    assert float(row["public_score"]) == pytest.approx(scores["public"], abs=1e-4)
    assert float(row["private_score"]) == pytest.approx(scores["private"], abs=1e-4)
    assert scores["public"] >= 0 and (profile.metric != "accuracy" or scores["public"] <= 100)


def test_checkpoints_rank_by_the_profiles_metric_and_select_takes_the_best(finished):
    _, profile, pipeline = finished
    index = checkpoint_index(pipeline)
    metric = index["metric"]
    assert index["direction"] == profile.metric_direction
    values = [entry[metric] for entry in index["checkpoints"]]
    assert 0 < len(values) <= index["keep_top_k"]
    assert values == sorted(values, reverse=profile.metric_direction == "max")
    train = pipeline.plan["train"].artifact.manifest["metrics"]
    assert train[f"best_{metric}"] == values[0] and train["best_epoch"] == index["checkpoints"][0]["epoch"]
    select = pipeline.plan["select"]
    assert select.artifact.manifest["metrics"][f"{metric}_of_sources"] == values[:1]
    model = torch.load(select.dir / "model.pt", weights_only=False)
    assert model["selected_from"] == [index["checkpoints"][0]["file"]]


def test_model_file_records_its_normalization(finished):
    _, _, pipeline = finished
    model = torch.load(pipeline.plan["select"].dir / "model.pt", weights_only=False)
    normalize = pipeline.plan["normalize"]
    assert model["normalization"]["normalize_key"] == normalize.key
    assert model["normalization"]["method"] == normalize.params["method"]


def test_a_new_decode_param_reruns_only_decode_and_after(finished):
    _, profile, pipeline = finished
    param, new = FAMILIES[profile.name].decode_change
    old = pipeline.recipe["decode"][param]
    before, changed = variant(finished, f"decode.{param}={new}", start="decode", stop="csv")
    assert [before[s].state for s in ("download", "normalize", "train", "select")] == ["fresh"] * 4
    assert before["decode"].state == "stale" and f"param {param}: {old} → {new}" in before["decode"].reason
    assert before["csv"].state == "stale" and "upstream decode changed" in before["csv"].reason
    assert [line.state for line in changed.status()] == ["fresh"] * 6 + ["stale"]   # not submitted
    assert changed.plan["decode"].dir != pipeline.plan["decode"].dir
    assert pipeline.plan["decode"].artifact.complete and changed.plan["decode"].artifact.complete
    validate_submission(changed.plan["csv"].dir / "submission.csv", sample_path(pipeline), profile)


def test_select_can_average_the_top_two_checkpoints(finished):
    _, _, pipeline = finished
    before, averaged = variant(finished, "select.method=average-best", "select.n=2", only="select")
    assert [before[s].state for s in ("download", "normalize", "train")] == ["fresh"] * 3
    assert before["select"].state == "stale" and "param method: best → average-best" in before["select"].reason
    checkpoints = pipeline.plan["train"].dir / "checkpoints"
    entries = checkpoint_index(pipeline)["checkpoints"][:2]
    sources = [torch.load(checkpoints / e["file"], weights_only=False)["state_dict"] for e in entries]
    model = torch.load(averaged.plan["select"].dir / "model.pt", weights_only=False)
    assert model["selected_from"] == [e["file"] for e in entries]
    assert model["state_dict"].keys() == sources[0].keys()
    for name, tensor in model["state_dict"].items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, (sources[0][name] + sources[1][name]) / 2, atol=1e-6), name
        else:
            assert torch.equal(tensor, (sources[0][name] + sources[1][name]) // 2), name
