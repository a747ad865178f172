"""Feature augmentation: speed perturbation (batches and hw1p2 windows, labels kept aligned), time warping, masks
sized to each utterance, feature noise; each off by default and drawing no random numbers when off."""
from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from pipeline.data.frames import FrameWindows
from pipeline.data.store import FeatureStore
from pipeline.tasks.frames_recipe import FrameTrainConfig
from pipeline.tasks.train_recipe import AugmentConfig, SpecAugmentConfig
from pipeline.data.store import StoreError
from pipeline.training.augment import (WARP_STEPS, add_noise, augment_batch, band_warp, dct_matrix, freq_warp,
                                       load_warps, speed_perturb, time_warp, warp_matrices)
from pipeline.training.specaugment import spec_augment


def ramps(lengths: list[int], dim: int = 2) -> torch.Tensor:
    """A padded batch whose frame t holds the value t in every feature (zeros past each length)."""
    x = torch.zeros(len(lengths), max(lengths), dim)
    for b, length in enumerate(lengths):
        x[b, :length] = torch.arange(length, dtype=torch.float32)[:, None]
    return x


def untouched(gen: torch.Generator) -> bool:
    return torch.equal(gen.get_state(), torch.Generator().manual_seed(5).get_state())


# ---- speed perturbation --------------------------------------------------------------------------------------------

def test_speed_perturb_resamples_each_utterance_to_its_new_length():
    lengths = torch.tensor([40, 31, 12, 7])
    x = ramps(lengths.tolist())
    y, new = speed_perturb(x, lengths, [0.8, 1.25], torch.Generator().manual_seed(0))
    seen = set()
    for b in range(len(x)):
        factor = lengths[b].item() / new[b].item()
        chosen = min((0.8, 1.25), key=lambda f: abs(f - factor))
        seen.add(chosen)
        assert new[b] == max(1, round(lengths[b].item() / chosen))
        expected = torch.clamp(torch.arange(int(new[b])) * chosen, max=lengths[b].item() - 1)
        torch.testing.assert_close(y[b, : new[b], 0], expected.float())      # frame j is the source at j·factor
        assert torch.all(y[b, new[b]:] == 0)                                  # padding stays zero
    assert y.shape[1] == int(new.max()) and seen == {0.8, 1.25}


def test_speed_one_or_empty_is_identity_and_draws_nothing():
    x, lengths = ramps([9, 4]), torch.tensor([9, 4])
    for factors in ([], [1.0], [1.0, 1.0]):
        gen = torch.Generator().manual_seed(5)
        y, new = speed_perturb(x, lengths, factors, gen)
        assert y is x and new is lengths and untouched(gen)


def test_speed_factors_are_checked():
    with pytest.raises(pydantic.ValidationError, match="speed factors"):
        AugmentConfig(speed=[0.9, 3.0])


# ---- time warping -------------------------------------------------------------------------------------------------

def test_time_warp_keeps_length_ends_and_order():
    lengths = torch.tensor([50, 30, 6])
    x = ramps(lengths.tolist())
    y = time_warp(x, lengths, 5, torch.Generator().manual_seed(2))
    assert y.shape == x.shape
    changed = 0
    for b, length in enumerate(lengths.tolist()):
        values = y[b, :length, 0]
        assert values[0] == 0 and values[-1] == length - 1                    # the ends stay where they are
        assert torch.all(values[1:] >= values[:-1])                           # time keeps its order
        assert torch.all(y[b, length:] == x[b, length:])                      # padding untouched
        shift = (values - torch.arange(length)).abs().max()
        assert shift <= 5 + 1e-5                                              # nothing moves more than W frames
        changed += bool(shift > 0)
    assert torch.equal(y[2], x[2])                                            # too short (≤ 2W+1) to warp
    assert changed >= 1


def test_time_warp_moves_the_chosen_point_exactly():
    from pipeline.training.augment import warp_positions

    positions = warp_positions(21, 10, 3)                                     # frame 10 now sits at 13
    assert positions[13] == 10 and positions[0] == 0 and positions[20] == 20
    assert torch.allclose(positions[:14], torch.arange(14, dtype=torch.float64) * 10 / 13, atol=1e-9)


def test_time_warp_is_for_utterances_not_hw1p2_windows():
    with pytest.raises(pydantic.ValidationError, match="augment.speed"):
        FrameTrainConfig(masking={"time_warp": 3})


# ---- masks sized to the utterance, noise --------------------------------------------------------------------------

def test_time_masks_never_exceed_their_share_of_each_utterance():
    lengths = torch.tensor([100, 40, 10, 3] * 8)
    x = ramps(lengths.tolist()) + 1.0                                         # no zero frames before masking
    cfg = SpecAugmentConfig(time_mask_ratio=0.1, n_time=1)
    widest = torch.zeros(len(lengths), dtype=torch.long)
    for seed in range(30):
        masked = spec_augment(x, lengths, cfg, torch.Generator().manual_seed(seed))[..., 0] == 0
        real = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        widest = torch.maximum(widest, (masked & real).sum(1))
    assert torch.all(widest <= (lengths * 0.1).floor().long())
    assert widest[0] == 10 and widest[2] == 1 and widest[3] == 0             # the cap is reached, and scales


def test_a_ratio_that_caps_nothing_draws_the_same_masks():
    x, lengths = ramps([60, 20]) + 1.0, torch.tensor([60, 20])
    plain = spec_augment(x, lengths, SpecAugmentConfig(time_mask=8, freq_mask=2), torch.Generator().manual_seed(4))
    ratio = spec_augment(x, lengths, SpecAugmentConfig(time_mask=8, freq_mask=2, time_mask_ratio=1.0),
                         torch.Generator().manual_seed(4))
    assert torch.equal(plain, ratio)


def test_noise_has_its_std_on_real_frames_and_spares_padding():
    lengths = torch.tensor([400, 100])
    x = torch.zeros(2, 400, 20)
    y = add_noise(x, lengths, 0.5, torch.Generator().manual_seed(0))
    assert torch.all(y[1, 100:] == 0)
    assert abs(y[0].std().item() - 0.5) < 0.01 and abs(y[1, :100].std().item() - 0.5) < 0.02


def test_augment_batch_off_is_identity_and_on_changes_lengths_consistently():
    x, lengths = ramps([30, 12]), torch.tensor([30, 12])
    gen = torch.Generator().manual_seed(5)
    y, new = augment_batch(x, lengths, AugmentConfig(), SpecAugmentConfig(), gen)
    assert y is x and new is lengths and untouched(gen)
    y, new = augment_batch(x, lengths, AugmentConfig(speed=[1.5], noise_std=0.1),
                           SpecAugmentConfig(time_warp=2, time_mask_ratio=0.2), torch.Generator().manual_seed(1))
    assert new.tolist() == [20, 8] and y.shape == (2, 20, 2)
    assert torch.all(y[1, 8:] == 0)


# ---- hw1p2: a window read at another speed is the resampled utterance's window, with its label ---------------------

@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [40, 25]
    feats = [rng.normal(size=(n, 3)).astype(np.float32) for n in lengths]
    labels = [rng.integers(0, 40, n) for n in lengths]
    meta = {"dim": 3, "partition": "train", "label_kind": "frame", "symbols": [str(i) for i in range(40)],
            "normalization": "cmvn"}
    return FeatureStore.write(tmp_path / "s", ["u0", "u1"], lengths, iter(feats), iter(labels), meta)


def resampled_utterance(features: np.ndarray, labels: np.ndarray, factor: float):
    """Speed perturbation done the long way: frame j reads the source at j·factor (features interpolated, the
    label of the nearest source frame)."""
    n = max(1, round(len(features) / factor))
    positions = np.minimum(np.arange(n) * factor, len(features) - 1)
    below = np.floor(positions).astype(int)
    above = np.minimum(below + 1, len(features) - 1)
    weight = (positions - below)[:, None]
    return (features[below] * (1 - weight) + features[above] * weight,
            labels[np.rint(positions).astype(int)])


@pytest.mark.parametrize("factor, frame", [(1.25, 10), (0.8, 8), (1.0, 17)])
def test_window_at_speed_equals_the_resampled_utterances_window(store, factor, frame):
    context = 3
    windows = FrameWindows(store, context)
    u = 1
    global_frame = int(store.offsets[u]) + frame
    resampled, labels = resampled_utterance(np.asarray(store.features(u)), store.labels(u), factor)
    j = round(frame / factor)                                                # the same instant, resampled
    assert abs(j * factor - frame) < 1e-9
    padded = np.pad(resampled, ((context, context), (0, 0)))
    expected = padded[j : j + 2 * context + 1].reshape(-1)
    got = windows.gather(np.array([global_frame]), np.array([factor]))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert labels[j] == windows.labels(np.array([global_frame]))[0]          # the label moved with its frame


def test_window_speed_one_equals_the_plain_window_and_stays_inside_the_utterance(store):
    windows = FrameWindows(store, 4)
    frames = np.arange(len(windows))
    np.testing.assert_allclose(windows.gather(frames, np.ones(len(frames))), windows.gather(frames), atol=1e-6)
    fast = windows.gather(frames, np.full(len(frames), 1.5)).reshape(len(frames), 9, 3)
    first_of_u1 = int(store.offsets[1])
    assert np.all(fast[first_of_u1, :4] == 0)                                # nothing read from utterance 0
    assert np.all(fast[first_of_u1 - 1, 5:] == 0)                            # nor past utterance 0's end


# ---- frequency warping (VTLP on features) -------------------------------------------------------------------------

def test_the_middle_warp_is_the_identity_and_the_ends_warp():
    std = np.linspace(40, 3, 28)
    for kind in ("mfcc", "fbank"):
        maps = warp_matrices(kind, std, 0.1)
        assert maps.shape == (WARP_STEPS, 28, 28)
        torch.testing.assert_close(maps[WARP_STEPS // 2], torch.eye(28))
        assert (maps[0] - torch.eye(28)).abs().max() > 0.05 and (maps[-1] - torch.eye(28)).abs().max() > 0.05


def test_a_cepstral_warp_is_the_warp_of_the_log_mel_spectrum_the_cepstra_describe():
    rng = np.random.default_rng(0)
    dct = dct_matrix(40)
    np.testing.assert_allclose(dct @ dct.T, np.eye(40), atol=1e-12)       # orthonormal, as librosa's 'ortho'
    cepstra = rng.normal(size=28)
    spectrum = dct[:28].T @ cepstra                                        # the smoothed log-mel they describe
    factor = np.linspace(0.9, 1.1, WARP_STEPS)[3]
    expected = dct[:28] @ (band_warp(40, factor) @ spectrum)               # warp the bands, back to 28 cepstra
    maps = warp_matrices("mfcc", np.ones(28), 0.1).double().numpy()
    row_norms = np.linalg.norm(dct[:28] @ band_warp(40, factor) @ dct[:28].T, axis=1)
    np.testing.assert_allclose(maps[3] @ cepstra * row_norms, expected, atol=1e-6)   # float32 maps


def test_band_warp_reads_band_m_times_factor():
    warp = band_warp(10, 0.5)
    spectrum = np.arange(10.0)
    np.testing.assert_allclose(warp @ spectrum, np.arange(10) * 0.5)
    np.testing.assert_allclose(band_warp(10, 1.5) @ spectrum, np.minimum(np.arange(10) * 1.5, 9))


def test_freq_warp_maps_each_utterance_by_one_matrix_and_keeps_padding():
    maps = warp_matrices("fbank", np.ones(6), 0.2)
    x, lengths = torch.randn(5, 9, 6), torch.tensor([9, 7, 5, 3, 1])
    for b, length in enumerate(lengths):
        x[b, length:] = 0
    y = freq_warp(x, maps, torch.Generator().manual_seed(3))
    for b, length in enumerate(lengths):
        assert torch.all(y[b, length:] == 0)
        assert min((y[b, :length] - x[b, :length] @ m.T).abs().max() for m in maps) < 1e-5   # one map per row
    assert freq_warp(x, None, torch.Generator()) is x


def test_freq_warp_needs_the_normalize_stage_statistics(tmp_path):
    from pipeline.tasks.train_recipe import AugmentConfig

    assert load_warps(AugmentConfig(), tmp_path) is None
    with pytest.raises(StoreError, match="feature_stats.json: missing"):
        load_warps(AugmentConfig(freq_warp=0.1), tmp_path)
    (tmp_path / "feature_stats.json").write_text('{"kind": "mfcc", "std": [3.0, 2.0, 1.0]}')
    assert load_warps(AugmentConfig(freq_warp=0.1), tmp_path).shape == (WARP_STEPS, 3, 3)


def test_a_ctc_run_trains_with_every_augmentation_on(tmp_path):
    """Speed changes the lengths the model and the CTC loss see; the loop must take them as they come."""
    import json

    from pipeline.models.ctc_rnn import CTCRNNConfig
    from pipeline.tasks.ctc_recipe import CTCTrainConfig
    from pipeline.training import loop
    from pipeline.training.ctc import CTCTask
    from pipeline.training.synthetic import make_synthetic_store

    train = make_synthetic_store(tmp_path / "train", 12, seed=1)
    dev = make_synthetic_store(tmp_path / "dev", 4, seed=2, partition="dev")
    (tmp_path / "feature_stats.json").write_text(json.dumps({"kind": "mfcc", "std": [1.0] * train.dim}))
    cfg = CTCTrainConfig(epochs=2, batch_size=4, eval_batch_size=8, seed=3,
                         augment={"speed": [0.9, 1.1], "noise_std": 0.1, "freq_warp": 0.1},
                         specaugment={"time_warp": 3, "time_mask_ratio": 0.1, "freq_mask": 2})
    model = CTCRNNConfig(input_dim=train.dim, embed="conv", embed_channels=16, embed_layers=1, downsample=1,
                         lstm_hidden=16, lstm_layers=1, head_hidden=32)
    task = CTCTask(model, cfg, train, dev)
    from pipeline.training.augment import load_warps

    task.warps = load_warps(cfg.augment, tmp_path)
    metrics = loop.train(task, tmp_path / "out", tracking="off", run_name="t", run_config={}, progress=False)
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert metrics["epochs"] == 2 and all(np.isfinite(row["train_loss"]) for row in history)
