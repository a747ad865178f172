"""Readers for the Kaggle layout of the 11-785 competitions: `<root>/<partition>/<mfcc|fbank>/<id>.npy` and
`<root>/<partition>/<transcript|transcripts|text>/<id>.npy`, test order = sorted file names.

Every check fails with one line naming the file and what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import AsrpipeError
from pipeline.tasks.profiles import Profile


class DataError(AsrpipeError, ValueError):
    """Bad competition data: one line naming the file/field and what was expected."""


@dataclass
class Partition:
    name: str
    feature_files: list[Path]
    transcript_files: list[Path] | None

    @property
    def ids(self) -> list[str]:
        return [path.stem for path in self.feature_files]


def find_data_root(base: Path, profile: Profile, max_depth: int = 3) -> Path:
    """The folder holding the partitions (Kaggle zips nest it one or two levels down)."""
    train = profile.partitions[0]
    candidates = [base] + [p for depth in range(1, max_depth + 1) for p in sorted(base.glob("/".join(["*"] * depth)))]
    for candidate in candidates:
        if (candidate / train).is_dir():
            return candidate
    raise DataError(f"{base}: no '{train}/' folder within {max_depth} levels (expected the {profile.name} Kaggle layout)")


def list_partition(root: Path, name: str, profile: Profile, labelled: bool) -> Partition:
    feature_dir = root / name / profile.feature_dir
    if not feature_dir.is_dir():
        raise DataError(f"{feature_dir}: missing (expected {profile.feature_dir}/*.npy for partition {name})")
    features = sorted(feature_dir.glob("*.npy"))
    if not features:
        raise DataError(f"{feature_dir}: no .npy files")
    if not labelled:
        return Partition(name, features, None)
    transcript_dir = root / name / profile.transcript_dir
    transcripts = [transcript_dir / path.name for path in features]
    missing = [path for path in transcripts if not path.exists()]
    if missing:
        raise DataError(f"{missing[0]}: missing transcript for {features[transcripts.index(missing[0])].name} "
                        f"({len(missing)} of {len(features)} missing in {transcript_dir})")
    return Partition(name, features, transcripts)


def load_npy(path: Path, **kwargs) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, **kwargs)
    except (ValueError, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc.__class__.__name__}: {exc})") from None


def feature_length(path: Path, dim: int) -> int:
    """Frames in a feature file, read from the .npy header only (no data loaded)."""
    shape = load_npy(path, mmap_mode="r").shape
    return int(_time_axis_length(path, shape, dim))


def _time_axis_length(path: Path, shape: tuple, dim: int) -> int:
    if len(shape) != 2:
        raise DataError(f"{path}: array of shape {shape}, expected (frames, {dim})")
    if shape[1] == dim:
        return shape[0]
    if shape[0] == dim:  # fbank stored (F, T) in some semesters: the axis equal to dim is the feature axis
        return shape[1]
    raise DataError(f"{path}: array of shape {shape}, expected (frames, {dim}) or ({dim}, frames)")


def read_features(path: Path, dim: int) -> np.ndarray:
    array = load_npy(path)
    _time_axis_length(path, array.shape, dim)
    if array.shape[1] != dim:
        array = array.T
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: dtype {array.dtype}, expected floating-point features")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def read_transcript(path: Path, markers: tuple[str, str]) -> list[str]:
    array = load_npy(path)
    tokens = [str(token) for token in array.reshape(-1).tolist()]
    if len(tokens) < 2 or tokens[0] != markers[0] or tokens[-1] != markers[1]:
        head = tokens[:1] + ["…"] + tokens[-1:] if tokens else []
        raise DataError(f"{path}: transcript {head} must start with {markers[0]!r} and end with {markers[1]!r}")
    return tokens[1:-1]


def encode(tokens: list[str], index: dict[str, int], path: Path) -> np.ndarray:
    try:
        return np.fromiter((index[token] for token in tokens), dtype=np.int64, count=len(tokens))
    except KeyError as exc:
        raise DataError(f"{path}: unknown symbol {exc.args[0]!r} (expected one of the profile's "
                        f"{len(index)} symbols)") from None
