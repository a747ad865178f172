"""Feature-level augmentation of a padded training batch (B, T, F) with its lengths, in plain torch (no torchaudio):
the competitions ship cepstra, not audio. Random numbers come from the loop's CPU generator (reproducible runs).

    speed_perturb   each utterance's time axis resampled by a factor drawn from `factors` (Ko et al. 2015 do it on
                    audio: 0.9 / 1.0 / 1.1); factor 1.1 = 10 % faster = 10 % fewer frames; linear interpolation
    time_warp       SpecAugment's warp (Park et al. 2019): a point w0 of the utterance moves by up to W frames,
                    both sides stretched/squeezed linearly; the length stays
    add_noise       Gaussian noise of standard deviation `std` on the real frames (CMVN features: std units)
    freq_warp       vocal tract length perturbation (Jaitly & Hinton 2013) on features: the mel axis of each utterance
                    (window, for hw1p2) scaled by a factor from [1-r, 1+r], done as one linear map per factor:
                    MFCC -> smoothed log-mel (inverse DCT) -> warped bands -> DCT (fbank: the bands directly)

SpecAugment's masks are in specaugment.py. hw1p2 windows get the speed factor through `FrameWindows.gather`
(pipeline/data/frames.py), which reads the context at that speed around the labelled centre frame.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.data.store import FEATURE_STATS, StoreError
from pipeline.tasks.train_recipe import AugmentConfig


def load_warps(cfg: AugmentConfig, normalized: str | Path | None) -> torch.Tensor | None:
    """The frequency-warp maps for cfg.freq_warp, from the normalize output's feature statistics (None: off)."""
    if cfg.freq_warp <= 0:
        return None
    path = Path(normalized or "") / FEATURE_STATS
    if not path.exists():
        raise StoreError(f"{path}: missing; train.augment.freq_warp needs the raw feature statistics the "
                         f"normalize stage records (rerun normalize)")
    stats = json.loads(path.read_text())
    return warp_matrices(stats["kind"], np.asarray(stats["std"], dtype=np.float64), cfg.freq_warp, cfg.mel_bands)


def resample(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x (T, F) read at fractional frame positions (N,) by linear interpolation; positions within [0, T-1]."""
    low = positions.floor().long().clamp(0, len(x) - 1)
    high = (low + 1).clamp(max=len(x) - 1)
    weight = (positions - low.to(positions.dtype)).unsqueeze(-1).to(x.dtype)
    return x[low] * (1 - weight) + x[high] * weight


def speed_perturb(x: torch.Tensor, lengths: torch.Tensor, factors: list[float],
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x', lengths'): utterance b read at speed factors[k_b], so it lasts round(length / factor) frames."""
    if not factors or all(f == 1.0 for f in factors):
        return x, lengths
    choice = torch.randint(len(factors), (len(x),), generator=gen)
    chosen = torch.tensor(factors, dtype=torch.float64)[choice]
    lengths = lengths.cpu()
    new_lengths = torch.clamp((lengths.double() / chosen).round().long(), min=1)
    out = x.new_zeros(len(x), int(new_lengths.max()), x.shape[-1])
    for b in range(len(x)):
        length = int(lengths[b])
        positions = torch.clamp(torch.arange(int(new_lengths[b]), dtype=torch.float64) * chosen[b], max=length - 1)
        out[b, : len(positions)] = resample(x[b, :length], positions)
    return out, new_lengths


def warp_positions(length: int, centre: int, shift: int) -> torch.Tensor:
    """Source positions of a warp that moves frame `centre` to `centre + shift`, linear on both sides."""
    t = torch.arange(length, dtype=torch.float64)
    moved = centre + shift
    left = t * centre / moved
    right = centre + (t - moved) * (length - 1 - centre) / max(length - 1 - moved, 1)
    return torch.where(t < moved, left, right).clamp(0, length - 1)


def time_warp(x: torch.Tensor, lengths: torch.Tensor, window: int, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment time warping: per utterance longer than 2·window+1 frames, a centre w0 in [window, L-window)
    moves by a shift in [-window, window] (never onto the utterance's ends)."""
    if window <= 0:
        return x
    out = x.clone()
    for b, length in enumerate(lengths.cpu().tolist()):
        if length <= 2 * window + 1:
            continue
        centre = int(torch.randint(window, length - window, (1,), generator=gen))
        shift = int(torch.randint(-window, window + 1, (1,), generator=gen))
        shift = max(min(shift, length - 2 - centre), 1 - centre)
        if shift:
            out[b, :length] = resample(x[b, :length], warp_positions(length, centre, shift))
    return out


def add_noise(x: torch.Tensor, lengths: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """x + N(0, std²) on the real frames (padding stays zero)."""
    if std <= 0:
        return x
    real = (torch.arange(x.shape[1])[None, :] < lengths.cpu()[:, None]).unsqueeze(-1)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.dtype) * std
    return x + noise * real.to(x.dtype)


WARP_STEPS = 21  # factors drawn from this many evenly spaced values in [1-r, 1+r] (one matrix each)


def dct_matrix(bands: int) -> np.ndarray:
    """The orthonormal DCT-II (bands x bands): cepstra = D @ log-mel, as librosa's MFCC computes them."""
    n = np.arange(bands)
    d = np.sqrt(2.0 / bands) * np.cos(np.pi / bands * (n[None, :] + 0.5) * n[:, None])
    d[0] /= np.sqrt(2.0)
    return d


def band_warp(bands: int, factor: float) -> np.ndarray:
    """(bands x bands): band m of the warped spectrum reads band m·factor of the original (linear interpolation)."""
    positions = np.clip(np.arange(bands) * factor, 0, bands - 1)
    below = np.floor(positions).astype(int)
    above = np.minimum(below + 1, bands - 1)
    weight = positions - below
    warp = np.zeros((bands, bands))
    warp[np.arange(bands), below] += 1 - weight
    warp[np.arange(bands), above] += weight
    return warp


def warp_matrices(kind: str, std: np.ndarray, ratio: float, mel_bands: int = 40) -> torch.Tensor:
    """(WARP_STEPS, F, F) maps of normalized features, one per warp factor (the middle one is the identity).

    Features are normalized (x = raw/σ per dimension, after removing the mean, which a linear map keeps removed),
    so each map is diag(1/s)·M·diag(σ) with σ the typical per-dimension std of raw training utterances (the normalize
    stage records it) and s renormalizing every output to unit variance. M warps the raw features: for MFCC
    (kind "mfcc", F ≤ mel_bands cepstra) D_F·W·D_Fᵀ, through the smoothed log-mel spectrum the F cepstra describe;
    for filterbanks W itself."""
    dim = len(std)
    maps = []
    for factor in np.linspace(1 - ratio, 1 + ratio, WARP_STEPS):
        if kind == "fbank":
            warp = band_warp(dim, factor)
        else:
            dct = dct_matrix(max(mel_bands, dim))[:dim]
            warp = dct @ band_warp(dct.shape[1], factor) @ dct.T
        scaled = warp * std[None, :]
        maps.append(scaled / np.sqrt((scaled**2).sum(axis=1, keepdims=True)))
    return torch.tensor(np.stack(maps), dtype=torch.float32)


def freq_warp(x: torch.Tensor, matrices: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """x (B, T, F) with each row's features mapped by one of `matrices` drawn at random (padding stays zero)."""
    if matrices is None:
        return x
    chosen = matrices[torch.randint(len(matrices), (len(x),), generator=gen)].to(x.device, x.dtype)
    return torch.einsum("btf,bgf->btg", x, chosen)


def augment_batch(x: torch.Tensor, lengths: torch.Tensor, cfg: AugmentConfig, specaugment,
                  gen: torch.Generator, warps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Speed, frequency warp (`warps`: warp_matrices for cfg.freq_warp), time warp (specaugment.time_warp),
    SpecAugment masks, noise, in that order; a config that turns everything off returns x unchanged and draws no
    random numbers beyond the masks' own."""
    from pipeline.training.specaugment import spec_augment

    x, lengths = speed_perturb(x, lengths, cfg.speed, gen)
    x = freq_warp(x, warps, gen)
    x = time_warp(x, lengths, specaugment.time_warp, gen)
    x = spec_augment(x, lengths, specaugment, gen)
    return add_noise(x, lengths, cfg.noise_std, gen), lengths
