"""hw1p2 frame loader: context windows gathered per batch from the memmapped feature store, never materialized.

A window for frame i is frames i-c … i+c flattened, (2c+1)·F values. Padding:
  "utterance" (default): positions outside frame i's own utterance are zeros (no window crosses an utterance);
  "global": the starters' behaviour — utterances concatenated, zeros only beyond the two ends of the partition,
            so windows near an utterance boundary see the neighbouring utterance (exact parity with the starter).

    loader = FrameWindows(store, context=30, padding="utterance")
    for x, y in loader.batches(batch_size=2048, epoch=0, seed=11785, subset=1.0):   # x (B, 61·F) float32, y (B,)
        ...
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, Literal

import numpy as np

from pipeline.data.store import FeatureStore

Padding = Literal["utterance", "global"]


class FrameWindows:
    def __init__(self, store: FeatureStore, context: int, padding: Padding = "utterance"):
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        if padding not in ("utterance", "global"):
            raise ValueError(f"padding must be 'utterance' or 'global', got {padding!r}")
        self.store, self.context, self.padding = store, context, padding
        self.features = store.features_array            # (N, F) memmap
        self.offsets = np.asarray(store.offsets)         # (U + 1,)
        self.span = np.arange(-context, context + 1)     # (W,)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def window_dim(self) -> int:
        return len(self.span) * self.store.dim

    def bounds(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and one-past-last frame a window around each frame may read."""
        if self.padding == "global":
            return np.zeros_like(frames), np.full_like(frames, len(self))
        utterance = np.searchsorted(self.offsets, frames, side="right") - 1
        return self.offsets[utterance], self.offsets[utterance + 1]

    def gather(self, frames: np.ndarray, speed: np.ndarray | None = None) -> np.ndarray:
        """(B, (2c+1)·F) float32 windows around the given global frame indices. `speed` (B,) reads each window's
        context at that speed (frame i + speed·k, linearly interpolated): the window the utterance resampled by
        that factor would have around the same instant, so the centre frame's label stays its label."""
        frames = np.asarray(frames, dtype=np.int64)
        low, high = self.bounds(frames)
        if speed is not None:
            return self._gather_at(frames[:, None] + np.asarray(speed)[:, None] * self.span[None, :], low, high)
        positions = frames[:, None] + self.span[None, :]                      # (B, W)
        valid = (positions >= low[:, None]) & (positions < high[:, None])
        windows = self.features[np.clip(positions, 0, len(self) - 1)]        # one fancy-index copy: (B, W, F)
        windows[~valid] = 0.0
        return windows.reshape(len(frames), -1)

    def _gather_at(self, positions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Windows read at fractional positions (B, W), zeros outside [low, high - 1]."""
        valid = (positions >= low[:, None]) & (positions <= high[:, None] - 1)
        below = np.floor(positions).astype(np.int64)
        above = np.minimum(below + 1, high[:, None] - 1)
        weight = (positions - below)[..., None].astype(np.float32)
        last = len(self) - 1
        windows = (self.features[np.clip(below, 0, last)] * (1 - weight)
                   + self.features[np.clip(above, 0, last)] * weight).astype(np.float32)
        windows[~valid] = 0.0
        return windows.reshape(len(positions), -1)

    def labels(self, frames: np.ndarray) -> np.ndarray:
        return np.asarray(self.store.labels_array[np.asarray(frames, dtype=np.int64)])

    def order(self, epoch: int, seed: int, subset: float = 1.0, shuffle: bool = True,
              among: np.ndarray | None = None) -> np.ndarray:
        """This epoch's frame order: a seeded permutation (a different one each epoch), optionally a subset; `among`
        restricts it to those frames (a quick run's utterances)."""
        if not 0.0 < subset <= 1.0:
            raise ValueError(f"subset must be in (0, 1], got {subset}")
        frames = np.arange(len(self)) if among is None else np.asarray(among)
        if not shuffle:
            return frames
        rng = np.random.default_rng([seed, epoch])
        return frames[rng.permutation(len(frames))[: max(1, round(len(frames) * subset))]]

    def utterance_frames(self, utterances: np.ndarray) -> np.ndarray:
        """The frame indices of these utterances, in order."""
        return np.concatenate([np.arange(self.offsets[u], self.offsets[u + 1]) for u in utterances]
                              or [np.zeros(0, dtype=np.int64)])

    def batches(self, batch_size: int, epoch: int = 0, seed: int = 0, subset: float = 1.0,
                shuffle: bool = True, with_labels: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        order = self.order(epoch, seed, subset, shuffle)
        for start in range(0, len(order), batch_size):
            frames = order[start : start + batch_size]
            if shuffle:
                frames = np.sort(frames)  # ascending reads are kinder to the page cache; order within a batch is moot
            yield self.gather(frames), (self.labels(frames) if with_labels else None)


def prefetched(batches, enabled: bool, depth: int = 3):
    """Gather the next batches in a thread while the GPU works (numpy's fancy-index copy releases the GIL). An error
    in the thread is raised here, in the consumer: an epoch never ends early without one."""
    if not enabled:
        yield from batches
        return
    box: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    failed: list[BaseException] = []

    def fill() -> None:
        try:
            for item in batches:
                box.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            failed.append(exc)
        finally:
            box.put(done)

    threading.Thread(target=fill, daemon=True).start()
    while (item := box.get()) is not done:
        yield item
    if failed:
        raise failed[0]
