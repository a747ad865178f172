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


def has_repeated_phrase(text: str, min_words: int = 2) -> bool:
    """True when some run of >= min_words words is immediately repeated ("OF THE PRIORESS OF THE PRIORESS"): the
    loop an attention decoder falls into once it loses the alignment."""
    words = text.split()
    for size in range(min_words, len(words) // 2 + 1):
        for start in range(len(words) - 2 * size + 1):
            if words[start : start + size] == words[start + size : start + 2 * size]:
                return True
    return False


def repeated_phrases(texts: list[str], min_words: int = 2) -> int:
    """How many transcripts hold an immediately repeated phrase (see has_repeated_phrase)."""
    return sum(has_repeated_phrase(text, min_words) for text in texts)
