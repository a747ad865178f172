"""Benchmark the hw1p2 frame loader against a starter-style per-frame Dataset, in one process, same data.

    .venv/bin/python tools/bench_loader.py                        # synthetic store of 1M frames × 28, context 30
    .venv/bin/python tools/bench_loader.py --store artifacts/demo-hw1p2/normalize/<dir>/train
    make bench-loader

Baseline (the F24 starter's AudioDataset): load every utterance, concatenate, np.pad the context once around the
whole array, `__getitem__(i)` slices 2c+1 frames and flattens, torch DataLoader(batch_size, shuffle=True).
Ours (pipeline/data/frames.py): windows gathered per batch from the memmap with one vectorized fancy index.
Both produce the same batch shape; frames/s is measured over the same number of frames, memory as the peak of
Python/numpy allocations (tracemalloc) while building the loader and reading the batches, against the raw
feature bytes (the memmap itself is page cache, not an allocation).
"""
from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from pipeline.data.frames import FrameWindows
from pipeline.data.store import FeatureStore


class StarterAudioDataset(torch.utils.data.Dataset):
    """The starter notebook's dataset, as students write it."""

    def __init__(self, store: FeatureStore, context: int):
        mfccs = [np.array(store.features(i)) for i in range(len(store))]
        labels = [store.labels(i) for i in range(len(store))]
        self.context = context
        self.mfccs = np.pad(np.concatenate(mfccs), ((context, context), (0, 0)))
        self.labels = np.concatenate(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        frames = self.mfccs[i : i + 2 * self.context + 1].flatten()
        return torch.FloatTensor(frames), torch.tensor(self.labels[i])


def synthetic_store(folder: Path, frames: int, dim: int = 28, seed: int = 0) -> FeatureStore:
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < frames:
        lengths.append(int(min(rng.integers(300, 2000), frames - sum(lengths))))
    meta = {"dim": dim, "partition": "train", "label_kind": "frame", "symbols": [str(i) for i in range(40)],
            "normalization": "cmvn"}
    return FeatureStore.write(folder, [f"u{i:06d}" for i in range(len(lengths))], lengths,
                              (rng.normal(size=(n, dim)).astype(np.float32) for n in lengths),
                              (rng.integers(0, 40, n) for n in lengths), meta)


def measure(make_batches, frames: int) -> tuple[float, int]:
    """Frames/s over the first `frames` frames and the peak traced allocation (bytes)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    seen = 0
    for x, _ in make_batches():
        seen += len(x)
        if seen >= frames:
            break
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seen / seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="a feature store (normalize output's train/); default: synthetic")
    parser.add_argument("--frames", type=int, default=1_000_000, help="synthetic store size")
    parser.add_argument("--measure-frames", type=int, default=200_000, help="frames read per loader")
    parser.add_argument("--context", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=2048)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore.open(args.store) if args.store else synthetic_store(Path(tmp) / "store", args.frames)
        raw = store.features_array.nbytes
        budget = min(args.measure_frames, int(store.offsets[-1]))
        print(f"{int(store.offsets[-1]):,} frames × {store.dim} ({raw / 2**20:.1f} MiB raw), context {args.context}, "
              f"batch {args.batch_size}, measuring {budget:,} frames, torch threads {torch.get_num_threads()}")

        def starter():
            dataset = StarterAudioDataset(store, args.context)
            return iter(torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True))

        def ours(padding: str):
            return lambda: FrameWindows(store, args.context, padding).batches(args.batch_size, epoch=0, seed=0)

        results = {"starter Dataset": measure(starter, budget),
                   "asrpipe FrameWindows": measure(ours("global"), budget),           # the starter's padding
                   "  per-utterance pad": measure(ours("utterance"), budget)}
    print(f"{'loader':<22} {'frames/s':>12} {'peak MiB':>10} {'peak / raw':>11}")
    for name, (rate, peak) in results.items():
        print(f"{name:<22} {rate:>12,.0f} {peak / 2**20:>10.1f} {peak / raw:>11.2f}")
    speedup = results["asrpipe FrameWindows"][0] / results["starter Dataset"][0]
    print(f"speed ratio (ours / starter): {speedup:.1f}x")


if __name__ == "__main__":
    main()
