"""Feature-level augmentation of a padded training batch (B, T, F) with its lengths, in plain torch (no torchaudio):
the competitions ship cepstra, not audio. Random numbers come from the loop's CPU generator (reproducible runs).

    speed_perturb   each utterance's time axis resampled by a factor drawn from `factors` (Ko et al. 2015 do it on
                    audio: 0.9 / 1.0 / 1.1); factor 1.1 = 10 % faster = 10 % fewer frames; linear interpolation
    time_warp       SpecAugment's warp (Park et al. 2019): a point w0 of the utterance moves by up to W frames,
                    both sides stretched/squeezed linearly; the length stays
    add_noise       Gaussian noise of standard deviation `std` on the real frames (CMVN features: std units)

SpecAugment's masks are in specaugment.py. hw1p2 windows get the speed factor through `FrameWindows.gather`
(pipeline/data/frames.py), which reads the context at that speed around the labelled centre frame.
"""
from __future__ import annotations

import torch

from pipeline.tasks.train_recipe import AugmentConfig


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


def augment_batch(x: torch.Tensor, lengths: torch.Tensor, cfg: AugmentConfig, specaugment,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Speed, time warp (specaugment.time_warp), SpecAugment masks, noise, in that order; a config that turns
    everything off returns x unchanged and draws no random numbers beyond the masks' own."""
    from pipeline.training.specaugment import spec_augment

    x, lengths = speed_perturb(x, lengths, cfg.speed, gen)
    x = time_warp(x, lengths, specaugment.time_warp, gen)
    x = spec_augment(x, lengths, specaugment, gen)
    return add_noise(x, lengths, cfg.noise_std, gen), lengths
