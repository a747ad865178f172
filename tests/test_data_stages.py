"""download + normalize on a tiny Kaggle-layout replica; readers and their one-line validation errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data.kaggle_layout import DataError, encode, read_features, read_transcript
from pipeline.data.store import FeatureStore, StoreError
from pipeline.engine import Pipeline
from pipeline.stages import download, normalize
from tests.kaggle_replica import make_replica


def data_pipeline(tmp_path, profile, method="cmvn"):
    return Pipeline(profile, {"normalize": {"method": method}}, [download.STAGE, normalize.STAGE],
                    artifacts_root=tmp_path / "artifacts", submissions_root=tmp_path / "submissions")


@pytest.fixture
def replica(tmp_path):
    return make_replica(tmp_path / "competition")


def raw_features(pipeline, partition, utt):
    root = pipeline.plan["download"].dir / pipeline.plan["download"].artifact.manifest["metrics"]["data_root"]
    return np.load(root / partition / "mfcc" / f"{utt}.npy")


def test_download_unzips_and_counts(tmp_path, replica):
    pipeline = data_pipeline(tmp_path, replica)
    pipeline.run(only="download")
    metrics = pipeline.plan["download"].artifact.manifest["metrics"]
    assert metrics["counts"] == {"train-clean-100": 12, "dev-clean": 4, "test-clean": 5}
    assert metrics["sample_submission"].endswith("sample_submission.csv")
    assert not list(pipeline.plan["download"].dir.glob("*.partial"))


def test_cmvn_store_per_utterance(tmp_path, replica):
    pipeline = data_pipeline(tmp_path, replica)
    pipeline.run()
    store = FeatureStore.open(pipeline.plan["normalize"].dir / "train")
    assert len(store) == 12 and store.dim == 28 and store.ids == sorted(store.ids)
    for i in range(len(store)):
        x = store.features(i)
        assert np.allclose(x.mean(0), 0, atol=1e-4) and np.allclose(x.std(0), 1, atol=1e-3)
    test = FeatureStore.open(pipeline.plan["normalize"].dir / "test")
    assert not test.has_labels and len(test) == 5


def test_labels_round_trip_to_transcripts(tmp_path, replica):
    pipeline = data_pipeline(tmp_path, replica)
    pipeline.run()
    store = FeatureStore.open(pipeline.plan["normalize"].dir / "dev")
    root = pipeline.plan["download"].dir / pipeline.plan["download"].artifact.manifest["metrics"]["data_root"]
    for i, utt in enumerate(store.ids):
        tokens = np.load(root / "dev-clean" / "transcript" / f"{utt}.npy").tolist()[1:-1]
        assert [store.symbols[j] for j in store.labels(i)] == tokens
        assert 0 not in store.labels(i)  # the CTC blank never appears in targets


def test_global_mvn_uses_train_statistics_only(tmp_path, replica):
    pipeline = data_pipeline(tmp_path, replica, method="global")
    pipeline.run()
    out = pipeline.plan["normalize"].dir
    stats = np.load(out / "global_mvn.npz")
    train = FeatureStore.open(out / "train")
    raw = np.concatenate([raw_features(pipeline, "train-clean-100", utt) for utt in train.ids]).astype(np.float64)
    assert np.allclose(stats["mean"], raw.mean(0), atol=1e-4)
    assert np.allclose(np.asarray(train.features_array).mean(0), 0, atol=1e-3)
    dev = FeatureStore.open(out / "dev")
    raw_dev = raw_features(pipeline, "dev-clean", dev.ids[0])
    assert np.allclose(dev.features(0), (raw_dev - stats["mean"]) / (stats["std"] + 1e-8), atol=1e-5)
    assert "global_mvn_sha256" in pipeline.plan["normalize"].artifact.manifest["metrics"]


def test_normalize_param_change_keeps_download_fresh(tmp_path, replica):
    data_pipeline(tmp_path, replica).run()
    lines = {line.stage: line for line in data_pipeline(tmp_path, replica, method="global").status()}
    assert lines["download"].state == "fresh"
    assert lines["normalize"].state == "stale" and "param method: cmvn → global" in lines["normalize"].reason


def test_bad_feature_file_stops_normalize_with_one_line(tmp_path, replica):
    pipeline = data_pipeline(tmp_path, replica)
    pipeline.run(only="download")
    root = pipeline.plan["download"].dir / pipeline.plan["download"].artifact.manifest["metrics"]["data_root"]
    bad = sorted((root / "dev-clean" / "mfcc").glob("*.npy"))[1]
    np.save(bad, np.zeros((50, 13), np.float32))
    with pytest.raises(DataError) as error:
        pipeline.run(only="normalize")
    message = str(error.value)
    assert str(bad) in message and "expected (frames, 28)" in message and "\n" not in message
    assert pipeline.status()[1].state == "incomplete"


@pytest.mark.parametrize("content, expected", [
    (np.full((5, 28), np.nan, np.float32), "NaN"),
    (np.zeros((5, 28, 2), np.float32), r"expected \(frames, 28\)"),
    (np.zeros((5, 28), np.int32), "floating-point"),
])
def test_read_features_rejects(tmp_path, content, expected):
    path = tmp_path / "x.npy"
    np.save(path, content)
    with pytest.raises(DataError, match=expected):
        read_features(path, 28)


def test_read_features_detects_feature_major_orientation(tmp_path):
    path = tmp_path / "fbank.npy"
    array = np.random.default_rng(0).normal(size=(80, 120)).astype(np.float32)
    np.save(path, array)
    assert np.array_equal(read_features(path, 80), array.T)


def test_transcript_markers_and_symbols(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, np.array(["[SOS]", "AH", "[EOS]"]))
    assert read_transcript(path, ("[SOS]", "[EOS]")) == ["AH"]
    with pytest.raises(DataError, match="must start with '<sos>'"):
        read_transcript(path, ("<sos>", "<eos>"))
    with pytest.raises(DataError, match="unknown symbol 'XX'"):
        encode(["AH", "XX"], {"AH": 1}, path)


def test_store_validation_names_the_file(tmp_path):
    store_dir = tmp_path / "store"
    meta = {"dim": 3, "partition": "dev", "label_kind": "sequence", "symbols": ["", "a", "b"], "normalization": "cmvn"}
    feats = [np.ones((4, 3)), np.ones((2, 3))]
    FeatureStore.write(store_dir, ["u1", "u2"], [4, 2], iter(feats), iter([np.array([1, 2]), np.array([2])]), meta)
    (store_dir / "meta.json").write_text(json.dumps({**meta, "dim": 5}))
    with pytest.raises(StoreError, match="features.npy: shape"):
        FeatureStore.open(store_dir)
    (store_dir / "meta.json").write_text(json.dumps({**meta, "symbols": ["", "a"]}))
    with pytest.raises(StoreError, match="labels.npy: label index outside"):
        FeatureStore.open(store_dir)


@pytest.mark.parametrize("payload", [b"", b"\x93NUMPY garbage"])
def test_unreadable_npy_is_one_line(tmp_path, payload):
    path = tmp_path / "broken.npy"
    path.write_bytes(payload)
    for read in (lambda: read_features(path, 28), lambda: read_transcript(path, ("[SOS]", "[EOS]"))):
        with pytest.raises(DataError, match="not a readable .npy array") as error:
            read()
        assert str(path) in str(error.value)


def test_truncated_feature_file_is_one_line(tmp_path):
    from pipeline.data.kaggle_layout import feature_length

    path = tmp_path / "cut.npy"
    np.save(path, np.zeros((100, 28), np.float32))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="not a readable .npy array"):
        feature_length(path, 28)
