"""normalize: Kaggle-layout partitions → validated feature stores (one memmapped float32 array per partition).

Reads the data as the download stage detected it (feature dim and orientation, transcript folder, start/end
markers, test order), which may differ from the profile where the formats doc marks a fact as conflicting.

method "cmvn": per-utterance cepstral mean/variance normalization (the starters' default);
method "global": mean/std over all TRAIN frames, saved as `global_mvn.npz` (its sha256 in the metrics) and applied to
every partition. Outputs: `train/`, `dev/`, `test/` feature stores (see pipeline/data/store.py), and `heldout/` when
the profile has a held-out evaluation set (the demos: speakers of accents no demo utterance uses), normalized like
dev; `feature_stats.json`: the raw train features' kind and typical per-utterance std per dimension (the
frequency-warp augmentation maps normalized features with it).
"""
from __future__ import annotations

import dataclasses
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pipeline.data.kaggle_layout import DataError, Partition, encode, feature_length, find_data_root, list_partition, \
    read_features, read_test_order, read_transcript, symbol_index
from pipeline.data.store import FEATURE_STATS, HELDOUT, FeatureStore
from pipeline.engine import Stage, StageRun
from pipeline.files import sha256_file, write_json_atomic
from pipeline.progress import track
from pipeline.tasks import FAMILIES
from pipeline.tasks.profiles import Profile

EPS = 1e-8
STORE_NAMES = ("train", "dev", "test")


def params(profile: Profile, recipe: dict) -> dict:
    chosen = {**recipe["normalize"], "dim": profile.feature_dim, "symbols": list(profile.symbols),
              "label_kind": FAMILIES[profile.family].label_kind,
              "markers": list(profile.markers) if profile.markers else None,
              "feature_dir": profile.feature_dir, "transcript_dir": profile.transcript_dir,
              "layout": profile.feature_layout, "test_order": profile.test_order}
    if profile.heldout is not None:  # absent otherwise, so profiles without one keep their keys
        if not profile.heldout.exists():
            raise DataError(f"{profile.heldout}: held-out evaluation set missing from the installation")
        chosen["heldout_sha256"] = sha256_file(profile.heldout)
    return chosen


def label(params: dict) -> str:
    return params["method"]


def cmvn(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / (x.std(axis=0) + EPS)


def global_stats(partition: Partition, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    dim = profile.feature_dim
    total = np.zeros(dim, np.float64)
    squares = np.zeros(dim, np.float64)
    frames = 0
    for path in track(partition.feature_files, "global MVN statistics (train)"):
        x = read_features(path, dim, profile.feature_layout).astype(np.float64)
        total += x.sum(axis=0)
        squares += (x * x).sum(axis=0)
        frames += len(x)
    mean = total / frames
    std = np.sqrt(np.maximum(squares / frames - mean * mean, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def labels_for(partition: Partition, profile: Profile, lengths: list[int], kind: str):
    index = symbol_index(profile.symbols)
    for path, frames in zip(partition.transcript_files, lengths):
        tokens = read_transcript(path, profile.markers, text=profile.label_format == "text")
        if kind == "frame" and len(tokens) != frames:
            raise DataError(f"{path}: {len(tokens)} frame labels for {frames} frames (expected one per frame)")
        yield encode(tokens, index, path)


def write_store(partition: Partition, store_dir: Path, profile: Profile, params: dict, transform) -> FeatureStore:
    dim, layout = profile.feature_dim, profile.feature_layout
    lengths = [feature_length(path, dim, layout) for path in partition.feature_files]
    features = (transform(read_features(path, dim, layout)) for path in
                track(partition.feature_files, f"normalize {partition.name}"))
    labels = (labels_for(partition, profile, lengths, params["label_kind"])
              if partition.transcript_files is not None else None)
    meta = {"dim": dim, "partition": partition.name, "label_kind": params["label_kind"],
            "symbols": params["symbols"], "normalization": params["method"]}
    return FeatureStore.write(store_dir, partition.ids, lengths, features, labels, meta)


def run(run: StageRun) -> dict:
    download = run.inputs["download"]
    root = download.dir / download.manifest["metrics"]["data_root"]
    facts = download.manifest["metrics"]
    profile = run.profile.reconciled(facts.get("detected"))  # the data's own dim, orientation, markers, folders
    root = find_data_root(root, profile)
    order = read_test_order(download.dir / facts["test_order"])[0] if facts.get("test_order") else None
    partitions = [list_partition(root, name, profile, labelled=(store != "test"),
                                 order=order if store == "test" else None)
                  for name, store in zip(profile.partitions, STORE_NAMES)]
    metrics: dict = {"dim": profile.feature_dim, "layout": profile.feature_layout,
                     "test_order": "test_order" if order else "sorted"}
    if run.params["method"] == "global":
        mean, std = global_stats(partitions[0], profile)
        np.savez(run.out / "global_mvn.npz", mean=mean, std=std)
        metrics["global_mvn_sha256"] = sha256_file(run.out / "global_mvn.npz")
        transform = lambda x: (x - mean) / (std + EPS)  # noqa: E731
    else:
        transform = cmvn
    stds: list[np.ndarray] = []

    def recording(x: np.ndarray) -> np.ndarray:  # the train utterances' raw std, read on the way
        stds.append(x.std(axis=0))
        return transform(x)

    for partition, store_name in zip(partitions, STORE_NAMES):
        store = write_store(partition, run.out / store_name, profile, run.params,
                            recording if store_name == "train" else transform)
        metrics[f"{store_name}_utterances"] = len(store)
        metrics[f"{store_name}_frames"] = int(store.offsets[-1])
    write_json_atomic(run.out / FEATURE_STATS, {"kind": profile.feature_dir,
                                                "std": np.mean(stds, axis=0).astype(float).round(6).tolist()})
    if run.profile.heldout is not None:
        store = write_heldout(run.profile.heldout, run.out / HELDOUT, profile, run.params, transform)
        metrics.update(heldout_utterances=len(store), heldout_frames=int(store.offsets[-1]))
    return metrics


def write_heldout(archive: Path, store_dir: Path, profile: Profile, params: dict, transform) -> FeatureStore:
    """The held-out set's store: its zip holds one folder with `<feature_dir>/` and `transcript-<family>/`."""
    with tempfile.TemporaryDirectory(dir=store_dir.parent) as unpacked, zipfile.ZipFile(archive) as zipped:
        zipped.extractall(unpacked)
        folders = [path for path in Path(unpacked).iterdir() if path.is_dir()]
        if len(folders) != 1:
            raise DataError(f"{archive}: expected one folder holding {profile.feature_dir}/ and "
                            f"transcript-{profile.family}/, found {len(folders)}")
        layout = dataclasses.replace(profile, transcript_dir=f"transcript-{profile.family}")
        partition = list_partition(folders[0].parent, folders[0].name, layout, labelled=True)
        return write_store(partition, store_dir, layout, params, transform)


STAGE = Stage(name="normalize", upstream=("download",),
              params=params, label=label, run=run)
