"""Inference batches for every decode stage: utterances sorted by length (little padding), cut within a budget,
padded onto the model's device, and per-batch results scattered back into the original (store) order.

    batches = length_batches(store.lengths, batch_size=32, max_frames=20_000)
    results = [run_model(*pad_batch([store.features(i) for i in b], device)) for b in batches]
    per_utterance = scatter(batches, results)          # per_utterance[i] belongs to utterance i
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def length_batches(lengths: Sequence[int] | np.ndarray, batch_size: int | None = None,
                   max_frames: int | None = None) -> list[list[int]]:
    """Index batches in ascending length order (ties keep their original order), each within the budget: at most
    `batch_size` utterances and at most `max_frames` padded frames (count × longest). An utterance longer than
    `max_frames` on its own gets a batch of its own. At least one budget must be given."""
    if batch_size is None and max_frames is None:
        raise ValueError("length_batches needs batch_size and/or max_frames")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    from pipeline.training.batching import cut_batches  # the training batches' cutter, in length order

    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    return cut_batches(np.argsort(lengths, kind="stable"), lengths, batch_size or max(1, len(lengths)), max_frames)


def scatter(batches: Sequence[Sequence[int]], results: Iterable[Sequence], total: int | None = None) -> list:
    """Per-batch results (one sequence per batch, aligned with that batch's indices) as one list in original order.
    Every index in 0..total-1 (default: all indices in `batches`) must be filled exactly once."""
    total = sum(len(b) for b in batches) if total is None else total
    out: list = [None] * total
    filled = np.zeros(total, dtype=bool)
    count = 0
    for indices, batch_results in zip(batches, results, strict=True):
        batch_results = list(batch_results)
        if len(batch_results) != len(indices):
            raise ValueError(f"a batch of {len(indices)} utterances returned {len(batch_results)} results")
        for i, result in zip(indices, batch_results):
            if filled[i]:
                raise ValueError(f"utterance {i} is in more than one batch")
            out[i], filled[i] = result, True
        count += len(indices)
    if count != total:
        raise ValueError(f"batches cover {count} of {total} utterances")
    return out


def pad_batch(features: Sequence, device=None):
    """(padded (B, T, F) float32, lengths (B,) int64), both on `device` (the model's): a GPU run pads on the host
    and copies once per batch."""
    import torch

    tensors = [torch.from_numpy(np.array(f, dtype=np.float32)) for f in features]  # a copy: stores are read-only
    lengths = torch.tensor([len(t) for t in tensors], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
    if device is not None:
        non_blocking = torch.device(device).type == "cuda"
        padded, lengths = padded.to(device, non_blocking=non_blocking), lengths.to(device, non_blocking=non_blocking)
    return padded, lengths


def model_device(model):
    """The device a model's parameters (or buffers) live on; CPU for a model with neither."""
    import itertools

    import torch

    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device
