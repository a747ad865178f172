"""Memory-aware batches for sequence-to-sequence training: bounded by padded frames, padded target tokens and
utterance count, not by a fixed batch size.

Activation memory grows with the padded batch (count × longest utterance), so a fixed batch size that fits short
utterances runs out of memory on the long tail of LibriSpeech (train-clean-100: up to ~35 s = 3,500 frames and
~600 characters). Here a batch grows while

    count × longest frames  ≤ max_frames      and   count × (longest target + 1) ≤ max_tokens   and   count ≤ max_batch

Each epoch: shuffle (seeded by seed + epoch), cut into buckets of ~BUCKET_BATCHES batches, sort each bucket by
length, cut greedily, shuffle the batch order: little padding, different batches every epoch, and the same plan on
resume. An utterance that alone exceeds a budget gets a batch of its own (`oversized` lists them).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

BUCKET_BATCHES = 16


def cut_batches(order: np.ndarray, frames: np.ndarray, tokens: np.ndarray, max_frames: int, max_tokens: int,
                max_batch: int) -> list[list[int]]:
    """Consecutive batches of `order` within the three budgets (target tokens count +1 for <eos>)."""
    batches, current, long_frames, long_tokens = [], [], 0, 0
    for i in order:
        f, t = int(frames[i]), int(tokens[i]) + 1
        grown_f, grown_t = max(long_frames, f), max(long_tokens, t)
        n = len(current) + 1
        if current and (n > max_batch or grown_f * n > max_frames or grown_t * n > max_tokens):
            batches.append(current)
            current, grown_f, grown_t = [], f, t
        current.append(int(i))
        long_frames, long_tokens = grown_f, grown_t
    if current:
        batches.append(current)
    return batches


def budget_batches(frames, tokens, max_frames: int, max_tokens: int, max_batch: int, seed: int = 0, epoch: int = 0,
                   shuffle: bool = True) -> list[list[int]]:
    frames, tokens = np.asarray(frames), np.asarray(tokens)
    if not shuffle:  # evaluation: one pass in length order
        return cut_batches(np.argsort(frames, kind="stable"), frames, tokens, max_frames, max_tokens, max_batch)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(frames))
    typical = max(1, min(max_batch, max_frames // max(1, int(np.median(frames)) if len(frames) else 1)))
    bucket = typical * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]
        batches += cut_batches(chunk[np.argsort(frames[chunk], kind="stable")], frames, tokens, max_frames,
                               max_tokens, max_batch)
    return [batches[i] for i in rng.permutation(len(batches))]


def padded_size(batch: list[int], frames, tokens) -> tuple[int, int]:
    """(padded frames, padded target tokens incl. <eos>) of a batch."""
    return len(batch) * int(max(frames[i] for i in batch)), len(batch) * int(max(tokens[i] + 1 for i in batch))


def oversized(frames, tokens, max_frames: int, max_tokens: int) -> list[int]:
    """Utterances that exceed a budget on their own (each will be a batch of one)."""
    return [i for i in range(len(frames)) if frames[i] > max_frames or tokens[i] + 1 > max_tokens]


class Seq2SeqDataset(Dataset):
    """(features (T, F) float32, characters (L,) int64) per utterance, read from the memmapped store."""

    def __init__(self, store):
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.store.features(i), dtype=np.float32))
        y = torch.from_numpy(np.array(self.store.labels(i))) if self.store.has_labels else torch.zeros(0, dtype=torch.long)
        return x, y


class Seq2SeqCollate:
    """→ x (B, T, F), x_lengths (B,), y_in = [sos]+y (B, L+1), y_out = y+[eos] (B, L+1), y (B, L), y_lengths (B,);
    targets padded with the pad index (ignored by the loss)."""

    def __init__(self, pad: int, sos: int, eos: int):
        self.pad, self.sos, self.eos = pad, sos, eos

    def __call__(self, batch):
        xs, ys = zip(*batch)
        x_lengths = torch.tensor([len(x) for x in xs], dtype=torch.long)
        y_lengths = torch.tensor([len(y) for y in ys], dtype=torch.long)
        sos = torch.tensor([self.sos])
        eos = torch.tensor([self.eos])
        y_in = pad_sequence([torch.cat([sos, y]) for y in ys], batch_first=True, padding_value=self.pad)
        y_out = pad_sequence([torch.cat([y, eos]) for y in ys], batch_first=True, padding_value=self.pad)
        y = pad_sequence(list(ys), batch_first=True, padding_value=self.pad)
        return pad_sequence(xs, batch_first=True), x_lengths, y_in, y_out, y, y_lengths
