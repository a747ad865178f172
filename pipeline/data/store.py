"""Feature store: one partition of a competition as one contiguous memmapped float32 array.

Layout of a store directory (written by the normalize stage, read by train/decode):

    features.npy        float32 (total_frames, dim)   — opened with mmap_mode="r", never copied whole
    offsets.npy         int64   (n_utts + 1,)         — utterance i is features[offsets[i]:offsets[i+1]]
    labels.npy          int64   (total_labels,)       — absent for an unlabelled partition (test)
    label_offsets.npy   int64   (n_utts + 1,)
    ids.json            utterance ids in the partition's canonical (sorted / test_order) order
    meta.json           {"dim", "partition", "label_kind", "symbols", "normalization"}

label_kind: "sequence" (hw3p2 phoneme indices, hw4p2 character indices) or "frame" (hw1p2: one label per frame).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pipeline.errors import AsrpipeError
from pipeline.files import atomic_write, save_npy_atomic, write_text_atomic


# Beside the stores, the normalize stage writes the raw train features' kind and typical per-utterance std per
# dimension under this name: {"kind": "mfcc" | "fbank", "std": [...]} (the frequency-warp augmentation reads it).
FEATURE_STATS = "feature_stats.json"
HELDOUT = "heldout"  # the store of a held-out evaluation set (unseen speakers), beside train/dev/test


class StoreError(AsrpipeError, ValueError):
    """A store on disk that does not match its own description (one line, names the file)."""


@dataclass
class FeatureStore:
    path: Path
    features_array: np.ndarray
    offsets: np.ndarray
    ids: list[str]
    meta: dict
    labels_array: np.ndarray | None = None
    label_offsets: np.ndarray | None = None

    # ---- reading ---------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, validate: bool = True) -> "FeatureStore":
        path = Path(path)
        for name in ("features.npy", "offsets.npy", "ids.json", "meta.json"):
            if not (path / name).exists():
                raise StoreError(f"{path / name}: missing (expected a feature store written by the normalize stage)")
        labels = label_offsets = None
        if (path / "labels.npy").exists():
            labels = np.load(path / "labels.npy", mmap_mode="r")
            label_offsets = np.load(path / "label_offsets.npy")
        store = cls(
            path=path,
            features_array=np.load(path / "features.npy", mmap_mode="r"),
            offsets=np.load(path / "offsets.npy"),
            ids=json.loads((path / "ids.json").read_text()),
            meta=json.loads((path / "meta.json").read_text()),
            labels_array=labels,
            label_offsets=label_offsets,
        )
        if validate:
            store.validate()
        return store

    def validate(self) -> None:
        feats, offs = self.features_array, self.offsets
        where = self.path / "features.npy"
        if feats.ndim != 2 or feats.shape[1] != self.meta["dim"]:
            raise StoreError(f"{where}: shape {feats.shape}, expected (frames, {self.meta['dim']}) as meta.json says")
        if len(offs) != len(self.ids) + 1 or offs[0] != 0 or offs[-1] != feats.shape[0] or np.any(np.diff(offs) < 0):
            raise StoreError(f"{self.path / 'offsets.npy'}: not {len(self.ids) + 1} non-decreasing offsets from 0 to {feats.shape[0]}")
        if not np.isfinite(feats).all():
            raise StoreError(f"{where}: contains NaN or infinite values")
        if self.labels_array is not None:
            lo = self.label_offsets
            n_symbols = len(self.meta["symbols"])
            if len(lo) != len(self.ids) + 1 or lo[-1] != len(self.labels_array):
                raise StoreError(f"{self.path / 'label_offsets.npy'}: does not match labels.npy ({len(self.labels_array)} labels)")
            if len(self.labels_array) and (self.labels_array.min() < 0 or self.labels_array.max() >= n_symbols):
                raise StoreError(f"{self.path / 'labels.npy'}: label index outside 0..{n_symbols - 1}")
            if self.meta["label_kind"] == "frame" and not np.array_equal(lo, offs):
                raise StoreError(f"{self.path / 'label_offsets.npy'}: frame labels must align with the frames")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def has_labels(self) -> bool:
        return self.labels_array is not None

    @property
    def symbols(self) -> list[str]:
        return list(self.meta["symbols"])

    def features(self, i: int) -> np.ndarray:
        return self.features_array[self.offsets[i] : self.offsets[i + 1]]

    def labels(self, i: int) -> np.ndarray:
        if self.labels_array is None:
            raise StoreError(f"{self.path}: partition {self.meta['partition']!r} has no labels")
        return np.asarray(self.labels_array[self.label_offsets[i] : self.label_offsets[i + 1]])

    # ---- writing ---------------------------------------------------------------------------------------------
    @staticmethod
    def write(
        path: str | Path,
        ids: Sequence[str],
        lengths: Sequence[int],
        features: Iterable[np.ndarray],
        labels: Iterable[np.ndarray] | None,
        meta: dict,
    ) -> "FeatureStore":
        """Write utterances in order; features are streamed into a preallocated memmap (never all in RAM)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lengths = np.asarray(lengths, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        dim = int(meta["dim"])

        def stream(tmp: Path) -> None:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(int(offsets[-1]), dim))
            for i, f in enumerate(features):
                if len(f) != lengths[i]:
                    raise StoreError(f"{ids[i]}: {len(f)} frames, expected {lengths[i]}")
                array[offsets[i] : offsets[i + 1]] = f
            array.flush()
            del array

        atomic_write(path / "features.npy", stream)
        save_npy_atomic(path / "offsets.npy", offsets)
        if labels is not None:
            labs = [np.asarray(y, dtype=np.int64) for y in labels]
            label_offsets = np.concatenate([[0], np.cumsum([len(y) for y in labs])]).astype(np.int64)
            flat = np.concatenate(labs) if labs else np.zeros(0, dtype=np.int64)
            save_npy_atomic(path / "labels.npy", flat)
            save_npy_atomic(path / "label_offsets.npy", label_offsets)
        write_text_atomic(path / "ids.json", json.dumps(list(ids)))
        write_text_atomic(path / "meta.json", json.dumps(meta, indent=1))
        return FeatureStore.open(path)


def merge_stores(stores: Sequence[FeatureStore], path: Path) -> FeatureStore:
    """One store holding every utterance of `stores` in order (train+dev for a final fit); ids must not collide."""
    ids = [i for store in stores for i in store.ids]
    if len(set(ids)) != len(ids):
        raise StoreError(f"{path}: the stores to merge share utterance ids ({len(ids) - len(set(ids))} repeated)")
    lengths = np.concatenate([store.lengths for store in stores])
    features = (store.features(i) for store in stores for i in range(len(store)))
    labels = (store.labels(i) for store in stores for i in range(len(store)))
    meta = {**stores[0].meta, "partition": "+".join(store.meta["partition"] for store in stores)}
    return FeatureStore.write(path, ids, lengths, features, labels, meta)


def decode_stores(normalized: Path) -> dict[str, FeatureStore]:
    """The partitions a decode stage reads: dev, test, and heldout when the normalize run wrote one (an evaluation
    set of unseen speakers, reported next to dev)."""
    names = ("dev", "test", HELDOUT) if (Path(normalized) / HELDOUT).is_dir() else ("dev", "test")
    return {name: FeatureStore.open(Path(normalized) / name) for name in names}


def open_store(store) -> FeatureStore:
    """A FeatureStore, or the path of one."""
    return store if isinstance(store, FeatureStore) else FeatureStore.open(store)
