"""Transcript metrics: mean Levenshtein distance (the 11-785 Kaggle metric) and CER (frame accuracy: frame_report)."""
from __future__ import annotations

from typing import Sequence

import Levenshtein


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


def score(metric: str, refs: list[str], hyps: list[str]) -> float:
    """A profile's transcript metric by name: "cer" or "levenshtein" (both lower is better)."""
    return cer(refs, hyps) if metric == "cer" else levenshtein_mean(refs, hyps)
