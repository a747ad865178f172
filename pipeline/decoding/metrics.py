"""Transcript and frame metrics: mean Levenshtein distance (the 11-785 Kaggle metric), CER, frame accuracy."""
from __future__ import annotations

from typing import Sequence

import Levenshtein
import numpy as np


def _check_pairs(refs: Sequence, hyps: Sequence) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")


def levenshtein_mean(refs: list[str], hyps: list[str]) -> float:
    """Mean edit distance per utterance between reference and hypothesis strings (0.0 for no utterances)."""
    _check_pairs(refs, hyps)
    if not refs:
        return 0.0
    return sum(Levenshtein.distance(ref, hyp) for ref, hyp in zip(refs, hyps)) / len(refs)


def cer(refs: list[str], hyps: list[str]) -> float:
    """Character error rate in percent: total edits / total reference characters x 100."""
    _check_pairs(refs, hyps)
    total_chars = sum(len(ref) for ref in refs)
    if total_chars == 0:
        raise ValueError("CER is undefined when the references are all empty")
    return 100.0 * sum(Levenshtein.distance(ref, hyp) for ref, hyp in zip(refs, hyps)) / total_chars


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Fraction of frames whose predicted label equals the reference label (hw1p2), in 0..1.

    Takes lists, numpy arrays or CPU tensors of equal length.
    """
    labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    _check_pairs(labels, predictions)
    if labels.size == 0:
        raise ValueError("accuracy is undefined for zero frames")
    return float((labels == predictions).mean())
