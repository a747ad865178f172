"""The whole hw4p2 pipeline (download → … → submit) on a tiny Kaggle-layout replica with the `tiny` recipe, plus
the csv contract: uppercase text in the profile's header, validated, judged locally by Levenshtein."""
from __future__ import annotations

import csv
import json

import pytest

from pipeline.config import load_recipe
from pipeline.engine import Pipeline
from pipeline.stages.csv import format_label
from pipeline.submission import SubmissionError, judge_locally, read_ledger, validate_submission
from pipeline.tasks import stages_for
from tests.kaggle_replica import make_replica


def hw4p2_pipeline(tmp_path, profile, *overrides, config="tiny"):
    recipe = load_recipe("hw4p2", config, overrides)
    return Pipeline(profile, recipe, stages_for("hw4p2"), artifacts_root=tmp_path / "artifacts",
                    submissions_root=tmp_path / "submissions", options={"wandb": "off", "progress": False},
                    config_name=config, overrides=overrides)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hw4p2")
    profile = make_replica(tmp_path / "competition", "demo-hw4p2")
    pipeline = hw4p2_pipeline(tmp_path, profile)
    pipeline.run()
    return tmp_path, profile, pipeline


def test_every_stage_completes_and_the_csv_matches_the_sample(finished):
    _, profile, pipeline = finished
    assert [line.state for line in pipeline.status()] == ["fresh"] * 7
    with open(pipeline.plan["csv"].dir / "submission.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == list(profile.csv_columns) and [r[0] for r in rows[1:]] == [str(i) for i in range(5)]
    assert all(r[1] == r[1].upper() and set(r[1]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ") for r in rows[1:])


def test_train_keeps_top_k_by_dev_distance_and_plots_attention(finished):
    _, _, pipeline = finished
    train = pipeline.plan["train"].dir
    index = json.loads((train / "checkpoints" / "index.json").read_text())
    assert index["metric"] == "dev_dist" and index["direction"] == "min"
    assert all("-dist" in e["file"] for e in index["checkpoints"])
    history = json.loads((train / "history.json").read_text())
    assert [r["tf_rate"] for r in history] == [1.0, 0.9]           # tiny.yaml: linear, step 0.1 every epoch
    assert sorted(p.name.split("-")[0] for p in (train / "attention").glob("*.png")) == ["epoch001", "epoch002"]
    assert (train / "attention").glob("*.png").__next__().read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_decode_writes_the_csv_contract_and_reports_greedy_beam_oracle(finished):
    _, profile, pipeline = finished
    decode = pipeline.plan["decode"].dir
    hypotheses = json.loads((decode / "test_hypotheses.json").read_text())
    assert hypotheses["ids"] == sorted(hypotheses["ids"]) and len(hypotheses["tokens"]) == 5
    assert all(3 <= t < len(profile.symbols) for tokens in hypotheses["tokens"] for t in tokens)
    metrics = pipeline.plan["decode"].artifact.manifest["metrics"]
    assert metrics["dev_oracle"] <= min(metrics["dev_beam"], metrics["dev_greedy"]) + 1e-9
    assert {"dev_greedy_seconds", "dev_beam_seconds", "test_seconds"} <= set(metrics)


def test_ledger_row_is_scored_by_the_local_judge(finished):
    tmp_path, profile, pipeline = finished
    rows = read_ledger(tmp_path / "submissions")
    assert len(rows) == 1 and rows[0]["decode_params"].startswith("beam=2")
    scores = judge_locally(pipeline.plan["csv"].dir / "submission.csv", profile)
    assert float(rows[0]["public_score"]) == pytest.approx(scores["public"])


def test_a_new_beam_reruns_only_decode_and_after(finished):
    tmp_path, profile, _ = finished
    wider = hw4p2_pipeline(tmp_path, profile, "decode.beam=3")
    states = {line.stage: line for line in wider.status()}
    assert [states[s].state for s in ("download", "normalize", "train", "select")] == ["fresh"] * 4
    assert states["decode"].state == "stale" and "param beam: 2 → 3" in states["decode"].reason


def test_csv_validation_refuses_characters_outside_the_vocabulary(finished, tmp_path):
    _, profile, pipeline = finished
    sample = pipeline.plan["download"].dir / pipeline.plan["download"].artifact.manifest["metrics"]["sample_submission"]
    symbols = list(profile.symbols)
    assert format_label([symbols.index("H"), symbols.index("I"), symbols.index(" ")],
                        {"label_format": "text", "symbols": symbols}) == "HI "
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(profile.csv_columns)
        writer.writerows([[i, "hello"] for i in range(5)])
    with pytest.raises(SubmissionError, match="line 2 label contains 'h'"):
        validate_submission(bad, sample, profile)
