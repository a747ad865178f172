"""A small learnable CTC feature store for tests and smoke runs (no speech needed).

Each phoneme has a fixed random prototype vector; an utterance is [SIL] + random phonemes + [SIL], each held for
a random number of frames, lightly smoothed across boundaries, plus Gaussian noise, then per-utterance CMVN.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.store import FeatureStore

HW3P2_SYMBOLS = [
    "", "[SIL]", "NG", "F", "M", "AE", "R", "UW", "N", "IY", "AW", "V", "UH", "OW", "AA", "ER", "HH", "Z", "K", "CH",
    "W", "EY", "ZH", "T", "EH", "Y", "AH", "B", "P", "TH", "DH", "AO", "G", "L", "JH", "OY", "SH", "D", "AY", "S", "IH",
]


def synthetic_utterance(rng: np.random.Generator, prototypes: np.ndarray, n_phones: tuple[int, int],
                        frames_per_phone: tuple[int, int], noise: float) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(2, len(prototypes), size=rng.integers(*n_phones))
    labels[0] = labels[-1] = 1  # [SIL]
    frames = np.concatenate([np.repeat(prototypes[p][None], rng.integers(*frames_per_phone), axis=0) for p in labels])
    smoothed = (np.roll(frames, 1, axis=0) + frames + np.roll(frames, -1, axis=0)) / 3
    x = smoothed + noise * rng.standard_normal(frames.shape)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    return x.astype(np.float32), labels.astype(np.int64)


def make_synthetic_store(path: str | Path, n_utts: int, seed: int, dim: int = 28, partition: str = "train",
                         n_phones: tuple[int, int] = (6, 14), frames_per_phone: tuple[int, int] = (3, 8),
                         noise: float = 0.5) -> FeatureStore:
    prototypes = np.random.default_rng(0).standard_normal((len(HW3P2_SYMBOLS), dim))  # shared by all partitions
    rng = np.random.default_rng(seed)
    utts = [synthetic_utterance(rng, prototypes, n_phones, frames_per_phone, noise) for _ in range(n_utts)]
    return FeatureStore.write(
        path, [f"synth-{i:05d}" for i in range(n_utts)], [len(x) for x, _ in utts], (x for x, _ in utts),
        [y for _, y in utts],
        {"dim": dim, "partition": partition, "label_kind": "sequence", "symbols": HW3P2_SYMBOLS, "normalization": "cmvn"},
    )
