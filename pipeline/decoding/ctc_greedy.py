"""Greedy CTC decoding and exact CTC scoring of given hypotheses.

Both take log-softmax outputs `log_probs` (B, T, C) and valid frame counts `lengths` (B,), on any device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best path per frame, repeats collapsed, blanks dropped (frames a a - a b b -> [a, a, b])."""
    best = log_probs.argmax(dim=-1)  # (B, T)
    previous = torch.nn.functional.pad(best[:, :-1], (1, 0), value=-1)
    frame_index = torch.arange(best.shape[1], device=best.device)
    keep = (best != blank) & (best != previous) & (frame_index[None, :] < lengths.to(best.device)[:, None])
    best, keep = best.cpu(), keep.cpu()
    return [row[mask].tolist() for row, mask in zip(best, keep)]


def ctc_log_likelihood(
    log_probs: torch.Tensor, lengths: torch.Tensor, hypotheses: list[list[int]], blank: int = 0
) -> torch.Tensor:
    """Exact log p(hypothesis | x) per utterance (float64, on log_probs' device); -inf if it cannot be aligned."""
    if log_probs.shape[0] != len(hypotheses):
        raise ValueError(f"{log_probs.shape[0]} utterances but {len(hypotheses)} hypotheses")
    device = log_probs.device
    targets = torch.tensor([token for hyp in hypotheses for token in hyp], dtype=torch.long, device=device)
    target_lengths = torch.tensor([len(hyp) for hyp in hypotheses], dtype=torch.long, device=device)
    # float64 keeps long utterances exact enough to compare hypotheses whose scores differ by ~1e-4.
    negative = F.ctc_loss(
        log_probs.double().transpose(0, 1),
        targets,
        lengths.to(device=device, dtype=torch.long),
        target_lengths,
        blank=blank,
        reduction="none",
        zero_infinity=False,
    )
    return -negative
