"""hw1p2 on a tiny Kaggle-layout replica with the `tiny` recipe, what only the frame classifier has: one CSV row per
test frame, the dev report (per-phoneme accuracy, confusion PNG), posterior ensembling and int labels.
Stages, CSV header/ids, ledger, status reasons, select: tests/test_pipeline_contract.py, for every family."""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from pipeline.submission import read_rows
from tests.kaggle_replica import make_replica
from tests.test_pipeline_contract import family_pipeline, finished_fixture, variant


finished = finished_fixture("demo-hw1p2")


def test_csv_has_one_row_per_test_frame_labelled_by_phoneme(finished):
    _, profile, pipeline = finished
    test_frames = pipeline.plan["normalize"].artifact.manifest["metrics"]["test_frames"]
    _, rows = read_rows(pipeline.plan["csv"].dir / "submission.csv")
    assert len(rows) == test_frames > 0
    assert {r[1] for r in rows} <= set(profile.symbols)
    predicted = np.load(pipeline.plan["decode"].dir / "test_frames.npy")
    assert [r[1] for r in rows] == [profile.symbols[c] for c in predicted]


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


def test_an_ensemble_of_two_decodes_every_test_frame(finished):
    _, _, pipeline = finished
    _, ensemble = variant(finished, "decode.ensemble=2", start="decode", stop="csv")   # the contract's decode change
    metrics = ensemble.plan["decode"].artifact.manifest["metrics"]
    assert len(metrics["members"]) == 2
    _, rows = read_rows(ensemble.plan["csv"].dir / "submission.csv")
    assert len(rows) == metrics["test_frames"] == pipeline.plan["decode"].artifact.manifest["metrics"]["test_frames"]


def test_int_label_competitions_get_int_labels(tmp_path):
    profile = make_replica(tmp_path / "competition", "demo-hw1p2", label_format="int")
    profile = dataclasses.replace(profile, label_format="int")
    pipeline = family_pipeline(tmp_path, profile)
    pipeline.run(stop="csv")
    _, rows = read_rows(pipeline.plan["csv"].dir / "submission.csv")
    predicted = np.load(pipeline.plan["decode"].dir / "test_frames.npy")
    assert [r[1] for r in rows] == [str(c) for c in predicted]
