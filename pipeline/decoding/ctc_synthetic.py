"""Synthetic CTC-like log-probs for testing and benchmarking decoders (no model needed).

Each utterance: a random label sequence over the non-blank classes, laid out on frames as an acoustic model
would (token runs of 1-4 frames with repeats, blank runs between, a blank forced between equal neighbours),
then noisy peaked logits. Some frames are made hard on purpose:
- confusable frames, where another token (or blank) is nearly as likely as the right one;
- smeared tokens, spread over 2-3 frames where blank wins every frame but the token's summed paths win,
  which is exactly where greedy decoding drops a token and a correct prefix beam search keeps it.
"""
from __future__ import annotations

import numpy as np
import torch


def _alignment(num_frames: int, num_classes: int, blank: int, rng: np.random.Generator) -> np.ndarray:
    """Frame-level targets (num_frames,) made of token runs and blank runs."""
    tokens = np.array([c for c in range(num_classes) if c != blank])
    frames: list[int] = []
    previous = blank
    while len(frames) < num_frames:
        token = int(rng.choice(tokens))
        blank_run = int(rng.geometric(0.45)) - 1  # 0.. frames of blank, mean ~1.2
        if token == previous:
            blank_run = max(blank_run, 1)
        frames += [blank] * blank_run + [token] * int(rng.integers(1, 5))
        previous = token
    return np.array(frames[:num_frames])


def _logits(targets: np.ndarray, num_classes: int, blank: int, rng: np.random.Generator) -> np.ndarray:
    num_frames = len(targets)
    logits = rng.normal(0.0, 1.0, size=(num_frames, num_classes))
    rows = np.arange(num_frames)
    logits[rows, targets] += rng.normal(6.0, 1.5, size=num_frames)

    confusable = rng.random(num_frames) < 0.12
    rivals = np.where(rng.random(num_frames) < 0.4, blank, rng.integers(0, num_classes, size=num_frames))
    logits[rows[confusable], rivals[confusable]] = logits[rows[confusable], targets[confusable]] + rng.uniform(
        -1.0, 0.6, size=confusable.sum()
    )

    # Smeared tokens: a token run becomes blank-dominated frames, each giving the token ~30-45%.
    starts = np.flatnonzero((targets != blank) & (np.r_[blank, targets[:-1]] != targets))
    for start in starts[rng.random(len(starts)) < 0.08]:
        token = targets[start]
        span = int(rng.integers(2, 4))
        for t in range(start, min(start + span, num_frames)):
            share = rng.uniform(0.3, 0.45)
            row = np.full(num_classes, np.log(0.02 / max(num_classes - 2, 1)))
            row[token] = np.log(share)
            row[blank] = np.log(1.0 - share - 0.02)
            logits[t] = row + rng.normal(0.0, 0.02, size=num_classes)
    return logits


def synthetic_ctc_batch(
    num_utterances: int,
    min_frames: int,
    max_frames: int,
    num_classes: int = 41,
    blank: int = 0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log_probs (B, T_max, C) float32 log-softmax (padding frames are uniform), lengths (B,) int64."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_frames, max_frames + 1, size=num_utterances)
    longest = int(lengths.max()) if num_utterances else 0
    logits = np.zeros((num_utterances, longest, num_classes))
    for b, num_frames in enumerate(lengths):
        targets = _alignment(int(num_frames), num_classes, blank, rng)
        logits[b, :num_frames] = _logits(targets, num_classes, blank, rng)
    log_probs = torch.from_numpy(logits).float().log_softmax(dim=-1)
    return log_probs, torch.from_numpy(lengths).long()
