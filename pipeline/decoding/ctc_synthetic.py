"""Synthetic CTC-like log-probs for testing and benchmarking decoders (no model needed).

Each utterance: a random label sequence over the non-blank classes, laid out on frames as an acoustic model
would (token runs of 1-4 frames with repeats, blank runs between, a blank forced between equal neighbours),
then peaked logits over sparse background noise, as a CTC-trained model gives. Some frames are made hard on
purpose (`hardness` scales how many):
- soft edges, where the first or last frame of a token run shares its mass with blank;
- confusable frames, where a look-alike token (or blank) is nearly as likely as the right one;
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


def _logits(
    targets: np.ndarray, num_classes: int, blank: int, rng: np.random.Generator, hardness: float
) -> np.ndarray:
    """Peaked logits around the targets: sparse background noise plus the three kinds of hard frames."""
    num_frames = len(targets)
    rows = np.arange(num_frames)
    logits = rng.normal(-2.0, 2.0, size=(num_frames, num_classes))
    logits[rows, targets] = np.maximum(rng.normal(8.0, 1.5, size=num_frames), 3.0)

    # Soft edges: the first and last frame of a token run share their mass with blank.
    is_token = targets != blank
    starts = is_token & (np.r_[blank, targets[:-1]] != targets)
    ends = is_token & (np.r_[targets[1:], blank] != targets)
    edges = rows[(starts | ends) & (rng.random(num_frames) < 0.5 * min(hardness, 1.0))]
    logits[edges, blank] = logits[edges, targets[edges]] + rng.uniform(-2.0, 1.0, size=len(edges))

    # Confusable frames: a fixed "look-alike" of the target (or blank) almost as likely as the target.
    look_alike = rng.permutation(num_classes)
    confusable = rows[rng.random(num_frames) < 0.08 * hardness]
    rivals = np.where(rng.random(len(confusable)) < 0.3, blank, look_alike[targets[confusable]])
    logits[confusable, rivals] = logits[confusable, targets[confusable]] + rng.uniform(-1.5, 0.5, len(confusable))

    # Smeared tokens: blank wins each of 2-3 frames, the token gets 30-45% of each.
    for start in rows[starts][rng.random(int(starts.sum())) < 0.06 * hardness]:
        for t in range(start, min(start + int(rng.integers(2, 4)), num_frames)):
            share = rng.uniform(0.3, 0.45)
            row = np.full(num_classes, np.log(0.01 / max(num_classes - 2, 1)))
            row[targets[start]] = np.log(share)
            row[blank] = np.log(0.99 - share)
            logits[t] = row
    return logits


def synthetic_ctc_batch(
    num_utterances: int,
    min_frames: int,
    max_frames: int,
    num_classes: int = 41,
    blank: int = 0,
    seed: int = 0,
    hardness: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log_probs (B, T_max, C) float32 log-softmax (padding frames are uniform), lengths (B,) int64."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_frames, max_frames + 1, size=num_utterances)
    longest = int(lengths.max()) if num_utterances else 0
    logits = np.zeros((num_utterances, longest, num_classes))
    for b, num_frames in enumerate(lengths):
        targets = _alignment(int(num_frames), num_classes, blank, rng)
        logits[b, :num_frames] = _logits(targets, num_classes, blank, rng, hardness)
    log_probs = torch.from_numpy(logits).float().log_softmax(dim=-1)
    return log_probs, torch.from_numpy(lengths).long()
