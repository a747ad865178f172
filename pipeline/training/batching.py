"""Length-bucketed batches over a FeatureStore, bounded by utterance count and (optionally) by padded frames and
padded target tokens, and the collates that pad them.

Activation memory grows with the padded batch (count × longest utterance), so a fixed batch size that fits short
utterances can run out of memory on the long tail (LibriSpeech train-clean-100: up to ~3,500 frames and ~600
characters). A batch grows while

    count ≤ max_batch   and   count × longest frames ≤ max_frames   and   count × longest tokens ≤ max_tokens

Each epoch: shuffle (seeded by seed + epoch), cut into buckets of ~BUCKET_BATCHES batches, sort each bucket by
length, cut greedily, shuffle the batch order: little padding, different batches every epoch, and the plan depends
only on (seed, epoch), so a resumed run sees the same batches as a straight one. An utterance that alone exceeds a
budget gets a batch of its own (`oversized` lists them).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

BUCKET_BATCHES = 16


def cut_batches(order, frames: np.ndarray, max_batch: int, max_frames: int | None = None,
                tokens: np.ndarray | None = None, max_tokens: int | None = None) -> list[list[int]]:
    """Consecutive batches of `order` within the budgets."""
    batches, current, long_frames, long_tokens = [], [], 0, 0
    for i in order:
        f, t = int(frames[i]), int(tokens[i]) if tokens is not None else 0
        grown_f, grown_t = max(long_frames, f), max(long_tokens, t)
        n = len(current) + 1
        over = (n > max_batch or (max_frames is not None and grown_f * n > max_frames)
                or (max_tokens is not None and grown_t * n > max_tokens))
        if current and over:
            batches.append(current)
            current, grown_f, grown_t = [], f, t
        current.append(int(i))
        long_frames, long_tokens = grown_f, grown_t
    if current:
        batches.append(current)
    return batches


def quick_subset(count: int, fraction: float | None, seed: int) -> np.ndarray | None:
    """The fixed share of `count` items a quick run trains on (train.quick): the same ones for every epoch and for
    every run with this seed, sorted; None when the run uses everything."""
    if fraction is None or fraction >= 1.0:
        return None
    keep = max(1, round(count * fraction))
    return np.sort(np.random.default_rng([seed, 1_000_003]).permutation(count)[:keep])


def epoch_batches(frames, max_batch: int, max_frames: int | None = None, tokens=None, max_tokens: int | None = None,
                  seed: int = 0, epoch: int = 0, shuffle: bool = True, among: np.ndarray | None = None
                  ) -> list[list[int]]:
    """This epoch's batches of utterance indices; `among` restricts them to those utterances (a quick subset)."""
    if among is not None:
        inner = epoch_batches(np.asarray(frames)[among], max_batch, max_frames,
                              None if tokens is None else np.asarray(tokens)[among], max_tokens, seed, epoch, shuffle)
        return [[int(among[i]) for i in batch] for batch in inner]
    frames = np.asarray(frames)
    tokens = None if tokens is None else np.asarray(tokens)
    budgets = (max_batch, max_frames, tokens, max_tokens)
    if not shuffle:  # evaluation: one pass in length order, least padding
        return cut_batches(np.argsort(frames, kind="stable"), frames, *budgets)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(frames))
    typical = max_batch
    if max_frames is not None and len(frames):
        typical = max(1, min(max_batch, max_frames // max(1, int(np.median(frames)))))
    bucket = typical * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]
        batches += cut_batches(chunk[np.argsort(frames[chunk], kind="stable")], frames, *budgets)
    return [batches[i] for i in rng.permutation(len(batches))]


def padded_size(batch: list[int], frames, tokens) -> tuple[int, int]:
    """(padded frames, padded target tokens) of a batch."""
    return len(batch) * int(max(frames[i] for i in batch)), len(batch) * int(max(tokens[i] for i in batch))


def oversized(frames, tokens, max_frames: int, max_tokens: int) -> list[int]:
    """Utterances that exceed a budget on their own (each will be a batch of one)."""
    return [i for i in range(len(frames)) if frames[i] > max_frames or tokens[i] > max_tokens]


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


def collate_padded(batch: list[tuple[torch.Tensor, torch.Tensor]], pad_to: int | None = None):
    """→ x (B, T, F) zero-padded (to T = pad_to frames when given), y (B, L) zero-padded, x_lengths, y_lengths."""
    xs, ys = zip(*batch)
    x_lengths = torch.tensor([len(x) for x in xs], dtype=torch.long)
    y_lengths = torch.tensor([len(y) for y in ys], dtype=torch.long)
    x = pad_sequence(xs, batch_first=True)
    if pad_to is not None and pad_to > x.shape[1]:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad_to - x.shape[1]))
    return x, pad_sequence(ys, batch_first=True), x_lengths, y_lengths


class Seq2SeqCollate:
    """→ x (B, T, F), x_lengths (B,), y_in = [sos]+y (B, L+1), y_out = y+[eos] (B, L+1), y (B, L), y_lengths (B,);
    targets padded with the pad index (ignored by the loss)."""

    def __init__(self, pad: int, sos: int, eos: int):
        self.pad, self.sos, self.eos = pad, sos, eos

    def __call__(self, batch):
        xs, ys = zip(*batch)
        x_lengths = torch.tensor([len(x) for x in xs], dtype=torch.long)
        y_lengths = torch.tensor([len(y) for y in ys], dtype=torch.long)
        sos, eos = torch.tensor([self.sos]), torch.tensor([self.eos])
        y_in = pad_sequence([torch.cat([sos, y]) for y in ys], batch_first=True, padding_value=self.pad)
        y_out = pad_sequence([torch.cat([y, eos]) for y in ys], batch_first=True, padding_value=self.pad)
        y = pad_sequence(list(ys), batch_first=True, padding_value=self.pad)
        return pad_sequence(xs, batch_first=True), x_lengths, y_in, y_out, y, y_lengths
