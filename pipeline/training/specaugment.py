"""SpecAugment frequency and time masks on a padded batch (B, T, F), in plain torch (no torchaudio).

Each utterance independently: with probability p_freq, n_freq frequency bands of width U[0, freq_mask] are set
to 0; with probability p_time, n_time time spans of width U[0, cap] inside its real length are set to 0, where cap
is min(time_mask, length), and at most time_mask_ratio · length when that is set (Park et al. 2019's p, which sizes
masks to each utterance). 0 is the mean of CMVN-normalized features. Padding is never touched. Time warping and the
other augmentations are in augment.py.
"""
from __future__ import annotations

import torch

from pipeline.tasks.train_recipe import SpecAugmentConfig


def _band_masks(n_masks: int, max_width: torch.Tensor, extent: torch.Tensor, size: int,
                gen: torch.Generator) -> torch.Tensor:
    """(B, size) bool: union of n_masks random bands of width ≤ max_width[b] within [0, extent[b])."""
    B = extent.shape[0]
    positions = torch.arange(size)[None, :]
    mask = torch.zeros(B, size, dtype=torch.bool)
    for _ in range(n_masks):
        width_cap = torch.clamp(torch.minimum(extent, max_width), min=0)
        width = (torch.rand(B, generator=gen) * (width_cap + 1).float()).long()          # U{0..cap}
        start = (torch.rand(B, generator=gen) * (extent - width + 1).clamp(min=1).float()).long()
        mask |= (positions >= start[:, None]) & (positions < (start + width)[:, None])
    return mask


def time_caps(lengths: torch.Tensor, cfg: SpecAugmentConfig) -> torch.Tensor:
    """The widest time mask per utterance: time_mask frames (when set), at most time_mask_ratio of its length."""
    caps = torch.full_like(lengths, cfg.time_mask) if cfg.time_mask > 0 else lengths.clone()
    if cfg.time_mask_ratio > 0:
        caps = torch.minimum(caps, (lengths.double() * cfg.time_mask_ratio).floor().long())
    return caps


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, cfg: SpecAugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """A masked copy of x (B, T, F). Random numbers come from `gen` (CPU) so runs are reproducible."""
    if not cfg.enabled:
        return x
    B, T, F = x.shape
    lengths = lengths.cpu()
    keep = torch.ones(B, T, F, dtype=torch.bool)
    real = torch.arange(T)[None, :] < lengths[:, None]
    if cfg.freq_mask > 0 and cfg.n_freq > 0:
        chosen = torch.rand(B, generator=gen) < cfg.p_freq
        bands = _band_masks(cfg.n_freq, torch.full((B,), cfg.freq_mask), torch.full((B,), F), F, gen) & chosen[:, None]
        keep &= ~(bands[:, None, :] & real[:, :, None])
    if cfg.time_masks:
        chosen = torch.rand(B, generator=gen) < cfg.p_time
        spans = _band_masks(cfg.n_time, time_caps(lengths, cfg), lengths, T, gen) & chosen[:, None]
        keep &= ~spans[:, :, None]
    return x * keep.to(x.device, non_blocking=True)
