"""Readers for every semester's Kaggle layout of the 11-785 competitions.

    <root>/<partition>/<mfcc|fbank>/<id>.npy                    (T, F) float, or (F, T) for the F24+ hw4p2 fbank
    <root>/<partition>/<transcript|transcripts|transcript/raw|text>/<id>.npy   string arrays, with or without
                                                                 <sos>/<eos> or [SOS]/[EOS] around them
    test order: sorted file names, or a test_order.csv (S22; with or without a header line)
    a sample submission (sample_submission.csv, or random_submission.csv inside the data in F22/S24 hw3p2)

`detect_layout` reads the facts the formats doc marks as conflicting from the data itself (shapes, the first
transcript, the sample submission, test_order.csv) and returns them next to what the profile declares. Every check
fails with one line naming the file and what was expected.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import AsrpipeError
from pipeline.tasks.profiles import FBANK_DIM, MARKER_PAIRS, MFCC_DIMS, PROFILES, SAMPLE_NAMES, TRANSCRIPT_DIRS, \
    Profile

SHAPE_SAMPLE = 8          # feature files per partition whose header is read to detect dim and orientation
LABEL_SAMPLE = 1000       # sample-submission rows read to detect the label format
SILENCE = ("[SIL]", "SIL")  # the two spellings of silence (F23+ / S22–F22); either is accepted for the other


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
        if (candidate / train / profile.feature_dir).is_dir():
            return candidate
    for candidate in candidates:
        if (candidate / train).is_dir():
            return candidate
    raise DataError(f"{base}: no '{train}/{profile.feature_dir}/' folder within {max_depth} levels "
                    f"(expected the {profile.name} Kaggle layout)")


def list_partition(root: Path, name: str, profile: Profile, labelled: bool,
                   order: list[str] | None = None) -> Partition:
    """The partition's files in canonical order: `order` (test_order.csv) when given, else sorted names."""
    feature_dir = root / name / profile.feature_dir
    if not feature_dir.is_dir():
        raise DataError(f"{feature_dir}: missing (expected {profile.feature_dir}/*.npy for partition {name})")
    features = sorted(feature_dir.glob("*.npy"))
    if not features:
        raise DataError(f"{feature_dir}: no .npy files")
    if order is not None:
        features = ordered(features, order, feature_dir)
    if not labelled:
        return Partition(name, features, None)
    transcript_dir = root / name / profile.transcript_dir
    transcripts = [transcript_dir / path.name for path in features]
    missing = [path for path in transcripts if not path.exists()]
    if missing:
        raise DataError(f"{missing[0]}: missing transcript for {features[transcripts.index(missing[0])].name} "
                        f"({len(missing)} of {len(features)} missing in {transcript_dir})")
    return Partition(name, features, transcripts)


def ordered(features: list[Path], order: list[str], feature_dir: Path) -> list[Path]:
    by_name = {path.name: path for path in features}
    missing = [name for name in order if name not in by_name]
    if missing:
        raise DataError(f"{feature_dir}: {missing[0]} is in the test order but not here "
                        f"({len(missing)} of {len(order)} missing)")
    if len(set(order)) != len(order) or len(order) != len(features):
        extra = sorted(set(by_name) - set(order))
        raise DataError(f"{feature_dir}: {len(features)} files but the test order lists {len(set(order))} distinct "
                        f"ones{f' (e.g. {extra[0]} is not listed)' if extra else ''}")
    return [by_name[name] for name in order]


def load_npy(path: Path, **kwargs) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, **kwargs)
    except (ValueError, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc.__class__.__name__}: {exc})") from None


# ---- features -------------------------------------------------------------------------------------------------

def feature_length(path: Path, dim: int, layout: str | None = None) -> int:
    """Frames in a feature file, read from the .npy header only (no data loaded)."""
    shape = load_npy(path, mmap_mode="r").shape
    return int(shape[1 - _feature_axis(path, shape, dim, layout)])


def _feature_axis(path: Path, shape: tuple, dim: int, layout: str | None) -> int:
    """1 for (frames, dim), 0 for (dim, frames). layout None: whichever axis equals dim ((frames, dim) first)."""
    expected = {"TF": f"(frames, {dim})", "FT": f"({dim}, frames)"}.get(layout, f"(frames, {dim}) or ({dim}, frames)")
    if len(shape) != 2:
        raise DataError(f"{path}: array of shape {shape}, expected {expected}")
    axes = {"TF": (1,), "FT": (0,)}.get(layout, (1, 0))
    for axis in axes:
        if shape[axis] == dim:
            return axis
    raise DataError(f"{path}: array of shape {shape}, expected {expected}"
                    f"{' like the other files of this competition' if layout else ''}")


def read_features(path: Path, dim: int, layout: str | None = None) -> np.ndarray:
    """(frames, dim) float32, whichever orientation the file stores (`layout` pins the detected one)."""
    array = load_npy(path)
    if _feature_axis(path, array.shape, dim, layout) == 0:
        array = array.T
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: dtype {array.dtype}, expected floating-point features")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def detect_features(paths: list[Path], profile: Profile) -> tuple[int, str, Path]:
    """(dim, layout, evidence file) from the .npy headers: the axis equal to the declared dim is the feature axis;
    a profile whose dim is unverified ("feature_dim" in conflicts) takes the axis that is a known feature dim."""
    known = (FBANK_DIM,) if profile.feature_dir == "fbank" else MFCC_DIMS
    found: tuple[int, str, Path] | None = None
    for path in paths:
        shape = load_npy(path, mmap_mode="r").shape
        if len(shape) != 2:
            raise DataError(f"{path}: array of shape {shape}, expected 2-d {profile.feature_dir} {profile.feature_shape}")
        if shape[0] == shape[1]:
            continue  # a square array says nothing about its orientation
        dims = [axis for axis in (1, 0) if shape[axis] == profile.feature_dim]
        if not dims and "feature_dim" in profile.conflicts:
            dims = [axis for axis in (1, 0) if shape[axis] in known]
        if not dims:
            raise DataError(f"{path}: {profile.feature_dir} array of shape {shape}; {profile.name} expects "
                            f"{profile.feature_shape}{_profiles_with_dims(profile, shape)}")
        axis = dims[0]
        guess = (int(shape[axis]), "TF" if axis == 1 else "FT", path)
        if found and found[:2] != guess[:2]:
            raise DataError(f"{path}: shape {shape} disagrees with {found[2].name} "
                            f"({found[0]}-d, {found[1]}): one orientation and dim per competition expected")
        found = found or guess
    if found is None:
        return profile.feature_dim, profile.feature_layout, paths[0]
    return found


def _profiles_with_dims(profile: Profile, shape: tuple) -> str:
    fitting = [p for p in PROFILES.values() if p.family == profile.family and not p.demo
               and p.feature_dir == profile.feature_dir and p.feature_dim in shape]
    if not fitting:
        return ""
    return f" (profiles with {fitting[0].feature_dim}-d {profile.feature_dir}: {', '.join(p.name for p in fitting)})"


# ---- transcripts ----------------------------------------------------------------------------------------------

def read_transcript(path: Path, markers: tuple[str, str] | None, text: bool = False) -> list[str]:
    """The tokens between the start/end markers; `text` (hw4p2) splits whatever strings it holds into characters."""
    array = load_npy(path)
    tokens = [str(token) for token in array.reshape(-1).tolist()]
    if markers is not None:
        if len(tokens) < 2 or tokens[0] != markers[0] or tokens[-1] != markers[1]:
            head = tokens[:1] + ["…"] + tokens[-1:] if tokens else []
            raise DataError(f"{path}: transcript {head} must start with {markers[0]!r} and end with {markers[1]!r}")
        tokens = tokens[1:-1]
    return list("".join(tokens)) if text else tokens


def detect_markers(path: Path) -> tuple[str, str] | None:
    tokens = [str(token) for token in load_npy(path).reshape(-1).tolist()]
    for pair in MARKER_PAIRS:
        if len(tokens) >= 2 and (tokens[0], tokens[-1]) == pair:
            return pair
    starts = {pair[0] for pair in MARKER_PAIRS} | {pair[1] for pair in MARKER_PAIRS}
    if tokens and (tokens[0] in starts or tokens[-1] in starts):
        raise DataError(f"{path}: transcript starts {tokens[0]!r} and ends {tokens[-1]!r}; expected one of "
                        f"{', '.join('/'.join(pair) for pair in MARKER_PAIRS)} or neither")
    return None


def detect_transcript_dir(partition_dir: Path, profile: Profile) -> str:
    for name in (profile.transcript_dir, *TRANSCRIPT_DIRS):
        if (partition_dir / name).is_dir() and next((partition_dir / name).glob("*.npy"), None) is not None:
            return name
    raise DataError(f"{partition_dir}: no transcripts (looked for {', '.join(dict.fromkeys((profile.transcript_dir, *TRANSCRIPT_DIRS)))}/*.npy)")


def symbol_index(symbols) -> dict[str, int]:
    """Symbol → class id, with silence reachable under both spellings ('SIL' / '[SIL]')."""
    index = {symbol: i for i, symbol in enumerate(symbols)}
    for spelling, other in (SILENCE, SILENCE[::-1]):
        if spelling in index and other not in index:
            index[other] = index[spelling]
    return index


def encode(tokens: list[str], index: dict[str, int], path: Path) -> np.ndarray:
    try:
        return np.fromiter((index[token] for token in tokens), dtype=np.int64, count=len(tokens))
    except KeyError as exc:
        raise DataError(f"{path}: unknown symbol {exc.args[0]!r} (expected one of the profile's "
                        f"{len(set(index.values()))} symbols)") from None


# ---- test order and sample submission ---------------------------------------------------------------------------

def read_test_order(path: Path) -> tuple[list[str], bool]:
    """(file names in submission order, whether the first line was a header). Names get `.npy` if they lack it."""
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and row[0].strip()]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty (expected one test file name per line)")
    column = 0
    header = not _looks_like_utterance(rows[0][0])
    if header and len(rows) > 1:  # a header names the file column, which may not be the first
        column = next((i for i, cell in enumerate(rows[1]) if _looks_like_utterance(cell)), 0)
    names = [row[column].strip() for row in rows[1 if header else 0:]]
    names = [name if name.endswith(".npy") else f"{name}.npy" for name in names]
    return names, header


def _looks_like_utterance(cell: str) -> bool:
    stem = cell.strip().removesuffix(".npy")
    return bool(stem) and all(part.isdigit() for part in stem.split("-"))


def find_file(data: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        found = sorted(data.rglob(name), key=lambda p: (len(p.parts), str(p)))
        if found:
            return found[0]
    return None


def read_sample_head(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = [row for _, row in zip(range(LABEL_SAMPLE), reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({exc})") from None
    if not header or len(header) != 2:
        raise DataError(f"{path}: header {header!r}, expected two columns (id, label)")
    return header, rows


def detect_label_format(sample: Path, rows: list[list[str]], profile: Profile) -> str:
    """hw1p2 sample labels are class ids ("int") or phoneme strings ("phoneme"); other families keep theirs."""
    if profile.family != "hw1p2":
        return profile.label_format
    labels = [row[1].strip() for row in rows if len(row) > 1 and row[1].strip()]
    if not labels:
        return profile.label_format
    if all(label.lstrip("-").isdigit() for label in labels):
        return "int"
    index = symbol_index(profile.symbols)
    unknown = next((label for label in labels if label not in index), None)
    if unknown is None:
        return "phoneme"
    raise DataError(f"{sample}: label {unknown!r} is neither a class id nor one of the {profile.name} phonemes")


# ---- the whole layout -----------------------------------------------------------------------------------------

def detect_layout(data: Path, profile: Profile) -> tuple[Path, dict, dict[str, Path]]:
    """(data root, detected facts, evidence) for an unpacked competition. Detected facts use the profile's field
    names (see Profile.declared / Profile.reconciled); evidence maps each fact to the file it was read from."""
    root = find_data_root(data, profile)
    train, dev, test = profile.partitions
    evidence: dict[str, Path] = {}

    feature_files = []
    for name in (train, dev, test):
        folder = root / name / profile.feature_dir
        if not folder.is_dir():
            raise DataError(f"{folder}: missing (expected {profile.feature_dir}/*.npy for partition {name})")
        feature_files += sorted(folder.glob("*.npy"))[:SHAPE_SAMPLE]
    if not feature_files:
        raise DataError(f"{root / train / profile.feature_dir}: no .npy files")
    dim, layout, shape_file = detect_features(feature_files, profile)
    evidence["feature_dim"] = evidence["feature_layout"] = shape_file

    transcript_dir = detect_transcript_dir(root / train, profile)
    first = min((root / train / transcript_dir).glob("*.npy"))
    markers = detect_markers(first)
    evidence["transcript_dir"] = evidence["markers"] = first

    order_file = find_file(data, (profile.test_order,) if profile.test_order else ("test_order.csv",))
    if profile.test_order and order_file is None:
        raise DataError(f"{data}: no {profile.test_order} ({profile.name} lists the test files in that order)")
    test_order = None
    if order_file is not None:
        read_test_order(order_file)  # readable, with or without a header line
        test_order = order_file.name
        evidence["test_order"] = order_file

    sample = find_file(data, tuple(dict.fromkeys((profile.sample_submission, *SAMPLE_NAMES))))
    if sample is None:
        raise DataError(f"{data}: no {profile.sample_submission} (or {', '.join(SAMPLE_NAMES)}) in the data")
    header, rows = read_sample_head(sample)
    label_format = detect_label_format(sample, rows, profile)
    evidence["sample_submission"] = evidence["csv_columns"] = evidence["label_format"] = sample

    detected = {"feature_dim": dim, "feature_layout": layout, "markers": list(markers) if markers else None,
                "transcript_dir": transcript_dir, "csv_columns": header, "label_format": label_format,
                "sample_submission": sample.name, "test_order": test_order}
    return root, detected, evidence


def differences(profile: Profile, detected: dict) -> dict[str, dict]:
    """fact → {declared, detected, flagged}: flagged = the formats doc marks this fact conflicting/unverified."""
    declared = profile.declared()
    return {key: {"declared": declared[key], "detected": value, "flagged": key in profile.conflicts}
            for key, value in detected.items() if declared.get(key) != value}


def describe(detected: dict, diffs: dict[str, dict]) -> str:
    """One line: what the data says, and where it differs from the profile."""
    layout = f"({detected['feature_dim']},T)" if detected["feature_layout"] == "FT" else f"(T,{detected['feature_dim']})"
    markers = "/".join(detected["markers"]) if detected["markers"] else "no markers"
    order = detected["test_order"] or "sorted names"
    facts = (f"features {layout}, transcripts {detected['transcript_dir']}/ with {markers}, test order {order}, "
             f"{detected['sample_submission']} header {','.join(detected['csv_columns'])} "
             f"({detected['label_format']} labels)")
    if not diffs:
        return f"detected {facts}: all as declared"
    changed = "; ".join(f"{key} {_show(d['declared'])} → {_show(d['detected'])}"
                        f"{'' if d['flagged'] else ' (not flagged in the formats doc)'}" for key, d in diffs.items())
    return f"detected {facts}; differs from the profile: {changed}"


def _show(value) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)
