"""The whole hw1p2 pipeline on a tiny Kaggle-layout replica with the `tiny` recipe: download → … → submit, the
frame CSV, the dev report, posterior ensembling, int labels, and exact resume of an interrupted training."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from pipeline.config import load_recipe
from pipeline.engine import Pipeline
from pipeline.submission import read_ledger
from pipeline.tasks import stages_for
from tests.kaggle_replica import make_replica


def hw1p2_pipeline(tmp_path, profile, *overrides):
    recipe = load_recipe("hw1p2", "tiny", overrides)
    return Pipeline(profile, recipe, stages_for("hw1p2"), artifacts_root=tmp_path / "artifacts",
                    submissions_root=tmp_path / "submissions", options={"wandb": "off", "progress": False},
                    config_name="tiny", overrides=overrides)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hw1p2")
    profile = make_replica(tmp_path / "competition", "demo-hw1p2")
    pipeline = hw1p2_pipeline(tmp_path, profile)
    pipeline.run()
    return tmp_path, profile, pipeline


def test_every_stage_completes(finished):
    _, _, pipeline = finished
    assert pipeline.names() == ["download", "normalize", "train", "select", "decode", "csv", "submit"]
    assert [line.state for line in pipeline.status()] == ["fresh"] * 7


def test_csv_has_one_row_per_test_frame_with_ids_from_zero(finished):
    _, profile, pipeline = finished
    test_frames = pipeline.plan["normalize"].artifact.manifest["metrics"]["test_frames"]
    rows = read_csv(pipeline.plan["csv"].dir / "submission.csv")
    assert rows[0] == ["id", "label"]
    assert len(rows) - 1 == test_frames > 0
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(test_frames)]
    assert {r[1] for r in rows[1:]} <= set(profile.symbols)
    predicted = np.load(pipeline.plan["decode"].dir / "test_frames.npy")
    assert [r[1] for r in rows[1:]] == [profile.symbols[c] for c in predicted]


def test_decode_reports_accuracy_per_phoneme_and_a_confusion_png(finished):
    _, profile, pipeline = finished
    decode = pipeline.plan["decode"]
    metrics = decode.artifact.manifest["metrics"]
    assert 0.0 <= metrics["dev_acc"] <= 100.0 and 0.0 < metrics["dev_majority_acc"] <= 100.0
    assert list(metrics["per_phoneme_acc"]) == list(profile.symbols)
    results = json.loads((decode.dir / "dev_results.json").read_text())
    confusion = np.array(results["confusion"])
    assert confusion.sum() == metrics["dev_frames"] and abs(100 * np.trace(confusion) / confusion.sum()
                                                            - metrics["dev_acc"]) < 1e-9
    assert (decode.dir / "dev_confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = json.loads((pipeline.plan["train"].dir / "checkpoints" / "index.json").read_text())
    assert index["metric"] == "dev_acc" and index["direction"] == "max"


def test_ledger_row_carries_the_dev_accuracy(finished):
    tmp_path, _, pipeline = finished
    rows = read_ledger(tmp_path / "submissions")
    assert len(rows) == 1 and rows[0]["target"] == "local"
    assert float(rows[0]["dev_metric"]) == pipeline.plan["decode"].artifact.manifest["metrics"]["dev_acc"]
    assert 0.0 <= float(rows[0]["public_score"]) <= 100.0


def test_ensemble_reruns_only_decode_and_after(finished):
    tmp_path, profile, _ = finished
    ensemble = hw1p2_pipeline(tmp_path, profile, "decode.ensemble=2")
    states = {line.stage: line for line in ensemble.status()}
    assert [states[s].state for s in ("download", "normalize", "train", "select")] == ["fresh"] * 4
    assert states["decode"].state == "stale" and "param ensemble: 1 → 2" in states["decode"].reason
    ensemble.run(start="decode", stop="csv")
    assert len(ensemble.plan["decode"].artifact.manifest["metrics"]["members"]) == 2
    rows = read_csv(ensemble.plan["csv"].dir / "submission.csv")
    assert len(rows) - 1 == ensemble.plan["decode"].artifact.manifest["metrics"]["test_frames"]


def test_int_label_competitions_get_int_labels(tmp_path):
    profile = make_replica(tmp_path / "competition", "demo-hw1p2", label_format="int")
    profile = dataclasses.replace(profile, label_format="int")
    pipeline = hw1p2_pipeline(tmp_path, profile)
    pipeline.run(stop="csv")
    rows = read_csv(pipeline.plan["csv"].dir / "submission.csv")
    predicted = np.load(pipeline.plan["decode"].dir / "test_frames.npy")
    assert [r[1] for r in rows[1:]] == [str(c) for c in predicted]
