"""Length-bucketed batches over a FeatureStore, and the padding collate.

Each epoch: shuffle the utterances (seeded by seed + epoch), cut them into buckets of `bucket_batches` batches,
sort each bucket by length, cut it into batches (fixed size, or greedy up to max_frames padded frames), shuffle
the batch order. Batches hold utterances of similar length (little padding) yet differ from epoch to epoch, and
the plan depends only on (seed, epoch) — a resumed run sees the same batches as a straight one.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

BUCKET_BATCHES = 16


class UtteranceDataset(Dataset):
    """(features (T, F) float32, labels (L,) int64) per utterance, read from the memmapped store."""

    def __init__(self, store):
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(self.store.features(i), dtype=np.float32))
        y = torch.from_numpy(np.array(self.store.labels(i))) if self.store.has_labels else torch.zeros(0, dtype=torch.long)
        return x, y


def collate_padded(batch: list[tuple[torch.Tensor, torch.Tensor]]):
    """→ x (B, T, F) zero-padded, y (B, L) zero-padded, x_lengths (B,), y_lengths (B,)."""
    xs, ys = zip(*batch)
    x_lengths = torch.tensor([len(x) for x in xs], dtype=torch.long)
    y_lengths = torch.tensor([len(y) for y in ys], dtype=torch.long)
    return pad_sequence(xs, batch_first=True), pad_sequence(ys, batch_first=True), x_lengths, y_lengths


def _cut(sorted_indices: np.ndarray, lengths: np.ndarray, batch_size: int, max_frames: int | None) -> list[list[int]]:
    """Consecutive batches of at most batch_size utterances and (if set) at most max_frames padded frames."""
    batches, current, longest = [], [], 0
    for i in sorted_indices:
        grown = max(longest, int(lengths[i]))
        too_many_frames = max_frames is not None and current and grown * (len(current) + 1) > max_frames
        if len(current) == batch_size or too_many_frames:
            batches.append(current)
            current, grown = [], int(lengths[i])
        current.append(int(i))
        longest = grown
    if current:
        batches.append(current)
    return batches


def epoch_batches(lengths: np.ndarray, batch_size: int, max_frames: int | None, seed: int, epoch: int,
                  shuffle: bool = True) -> list[list[int]]:
    lengths = np.asarray(lengths)
    if not shuffle:  # evaluation: one pass in length order, least padding
        return _cut(np.argsort(lengths, kind="stable"), lengths, batch_size, max_frames)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    bucket = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += _cut(chunk, lengths, batch_size, max_frames)
    return [batches[i] for i in rng.permutation(len(batches))]


def shard(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Disjoint, equal-sized share of the batches for one DDP rank (the remainder is dropped)."""
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]
