"""hw1p2 decode pieces for unseen speakers: test-time frequency warps (decode.tta_warp) and posterior smoothing
(decode.smooth). The stage-level check is in tests/test_frames_pipeline.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, load_recipe
from pipeline.data.store import FEATURE_STATS, FeatureStore, StoreError
from pipeline.models.mlp import FrameMLP
from pipeline.stages import decode_frames
from pipeline.stages.decode_frames import averaged_posteriors, posteriors, smooth_posteriors, tta_warps
from pipeline.tasks.frames_recipe import MLPConfig
from pipeline.tasks.profiles import PROFILES
from pipeline.training.augment import warp_matrices
from pipeline.training.checkpoints import model_checkpoint

DEMO = PROFILES["demo-hw1p2"]


def test_smoothing_averages_the_frames_around_each_frame_within_its_utterance():
    rng = np.random.default_rng(1)
    probs = rng.random((9, 4)).astype(np.float32)
    offsets = np.array([0, 5, 6, 9])
    smoothed = smooth_posteriors(probs, offsets, 3)
    for start, end in zip(offsets[:-1], offsets[1:]):
        for i in range(start, end):
            window = probs[max(i - 1, start) : min(i + 2, end)]   # never across an utterance boundary
            np.testing.assert_allclose(smoothed[i], window.mean(axis=0), rtol=1e-6)
    assert smooth_posteriors(probs, offsets, 1) is probs
    one_off = np.eye(2, dtype=np.float32)[[0, 0, 1, 0, 0]] * 0.9 + 0.05   # a one-frame outlier inside a run
    assert smooth_posteriors(one_off, np.array([0, 5]), 3).argmax(axis=1).tolist() == [0, 0, 0, 0, 0]


def _store_and_model(tmp_path):
    rng = np.random.default_rng(0)
    meta = {"dim": 4, "partition": "dev", "label_kind": "frame", "symbols": ["a", "b", "c"], "normalization": "cmvn"}
    store = FeatureStore.write(tmp_path / "dev", ["u0", "u1"], [7, 3], (rng.normal(size=(n, 4)) for n in (7, 3)),
                               (rng.integers(0, 3, n) for n in (7, 3)), meta)
    torch.manual_seed(0)
    cfg = MLPConfig(input_dim=4, context=2, num_classes=3, num_layers=1, width=8)
    saved = model_checkpoint(FrameMLP(cfg).eval(), cfg, 0, {}, "mlp")
    saved["data"] = {"context": 2, "padding": "utterance", "subset": 1.0}
    return store, saved


def test_posteriors_of_warped_features_are_those_of_the_mapped_store(tmp_path):
    store, saved = _store_and_model(tmp_path)
    warp = warp_matrices("mfcc", np.linspace(2.0, 0.5, 4), 0.1)[0].numpy()
    mapped = FeatureStore.write(tmp_path / "mapped", store.ids, store.lengths,
                                (np.asarray(store.features(i)) @ warp.T for i in range(len(store))),
                                (store.labels(i) for i in range(len(store))), store.meta)
    warped = posteriors(saved, {"dev": store}, 3, "cpu", warp)["dev"]
    np.testing.assert_allclose(warped, posteriors(saved, {"dev": mapped}, 3, "cpu")["dev"], atol=1e-6)
    assert not np.allclose(warped, posteriors(saved, {"dev": store}, 3, "cpu")["dev"], atol=1e-3)

    maps = [None, warp, warp_matrices("mfcc", np.linspace(2.0, 0.5, 4), 0.1)[-1].numpy()]
    truth = np.asarray(store.labels_array)
    mean, alone = averaged_posteriors([saved], {"dev": store}, 3, "cpu", truth, maps)
    expected = sum(posteriors(saved, {"dev": store}, 3, "cpu", m)["dev"] for m in maps) / 3
    np.testing.assert_allclose(mean["dev"], expected, atol=1e-6)
    assert alone == [round(float((expected.argmax(axis=1) == truth).mean() * 100), 3)]


def test_the_decoding_warps_are_the_training_maps_at_both_ends(tmp_path):
    assert tta_warps(tmp_path, 0.0, 40) == [None]
    with pytest.raises(StoreError, match=f"{FEATURE_STATS}: missing; decode.tta_warp needs"):
        tta_warps(tmp_path, 0.05, 40)
    std = [3.0, 2.0, 1.5, 1.0]
    (tmp_path / FEATURE_STATS).write_text(json.dumps({"kind": "mfcc", "std": std}))
    none, low, high = tta_warps(tmp_path, 0.05, 40)
    maps = warp_matrices("mfcc", np.asarray(std), 0.05).numpy()
    assert none is None and np.array_equal(low, maps[0]) and np.array_equal(high, maps[-1])


def test_decode_keys_stay_without_the_new_keys_and_even_smoothing_is_refused():
    plain = decode_frames.params(DEMO, load_recipe("hw1p2", "demo", ["decode.tta_warp=0", "decode.smooth=1"]))
    assert "tta_warp" not in plain and "smooth" not in plain and decode_frames.label(plain) == "argmax"
    tuned = decode_frames.params(DEMO, load_recipe("hw1p2", "demo"))   # the demo recipe decodes with both
    assert tuned["tta_warp"] == 0.05 and tuned["mel_bands"] == 40 and tuned["smooth"] == 3
    assert decode_frames.label(tuned) == "argmax-tta0.05-smooth3"
    with pytest.raises(ConfigError, match="smooth must be odd"):
        load_recipe("hw1p2", "demo", ["decode.smooth=4"])
    unwarped = load_recipe("hw1p2", "demo", ["decode.tta_warp=0.05", "train.augment.freq_warp=0"])
    with pytest.raises(ConfigError, match=r"decode.tta_warp=0.05: the model must have trained on frequency warps at "
                                          r"least that large \(train.augment.freq_warp=0\)"):
        decode_frames.params(DEMO, unwarped)
