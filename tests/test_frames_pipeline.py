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


def test_tta_warps_and_smoothing_decode_the_averaged_smoothed_posteriors(finished):
    from pipeline.data.store import decode_stores
    from pipeline.stages.decode_frames import posteriors, smooth_posteriors, tta_warps

    _, _, pipeline = finished
    _, tta = variant(finished, "train.augment.freq_warp=0.05", "decode.tta_warp=0.05", "decode.smooth=3",
                     stop="decode")
    decode = tta.plan["decode"]
    assert decode.dir.name.startswith("argmax-tta0.05-smooth3-") and decode.key != pipeline.plan["decode"].key
    normalized = tta.plan["normalize"].dir
    warps = tta_warps(normalized, 0.05, 40)
    assert warps[0] is None and len(warps) == 3 and not np.allclose(warps[1], warps[2])
    stores = {name: store for name, store in decode_stores(normalized).items() if name == "test"}
    model = tta.plan["select"].dir / "model.pt"
    each = [posteriors(model, stores, 4096, "cpu", warp)["test"] for warp in warps]
    expected = smooth_posteriors(sum(each) / 3, stores["test"].offsets, 3).argmax(axis=1)
    np.testing.assert_array_equal(np.load(decode.dir / "test_frames.npy"), expected)
    assert not np.array_equal(each[0].argmax(axis=1), expected)   # the maps and the smoothing change some frames
