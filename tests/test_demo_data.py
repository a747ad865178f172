"""Checks on the COMMITTED demo competitions in pipeline/demo_data (made by tools/make_demo.py).

Only format facts of the course's Kaggle layouts are hard-coded here; every count is read from the data.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from pipeline.tasks.profiles import HW1P2_PHONEMES, HW3P2_PHONEME_TO_CHAR

DEMO_DATA = Path(__file__).resolve().parent.parent / "pipeline" / "demo_data"
COMPETITIONS = ["demo-hw1p2", "demo-hw3p2", "demo-hw4p2"]
LABELED_SPLITS = ["train-clean-100", "dev-clean"]
SPLITS = [*LABELED_SPLITS, "test-clean"]
MAX_TOTAL_BYTES = 30 * 1024 * 1024
UTTERANCE_ID = re.compile(r"^\d+-\d+-\d{4}$")  # LibriSpeech SPK-CHAPTER-UTT

PHONEMES = HW1P2_PHONEMES
CMUDICT_ARPABET = HW3P2_PHONEME_TO_CHAR
PHONEME_CHARACTERS = set(CMUDICT_ARPABET.values()) - {" "}  # the blank never appears in labels
HW4P2_CHARACTERS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")


def zip_path(competition: str) -> Path:
    return DEMO_DATA / competition / f"{competition}.zip"


@lru_cache(maxsize=None)
def read_zip(competition: str) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path(competition)) as archive:
        assert archive.testzip() is None, "corrupt zip member"
        return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def read_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode())))
    return rows[0], rows[1:]


def root_of(competition: str) -> str:
    return f"11785-{competition}"


def ids_in(competition: str, split: str, kind: str) -> list[str]:
    """Utterance ids of `split/kind/*.npy`, in the zip's listing order."""
    prefix = f"{root_of(competition)}/{split}/{kind}/"
    return [name[len(prefix):-len(".npy")] for name in read_zip(competition) if name.startswith(prefix)]


def features(competition: str, split: str, utterance_id: str) -> np.ndarray:
    return load_npy(read_zip(competition)[f"{root_of(competition)}/{split}/mfcc/{utterance_id}.npy"])


def transcript(competition: str, split: str, utterance_id: str) -> np.ndarray:
    return load_npy(read_zip(competition)[f"{root_of(competition)}/{split}/transcript/{utterance_id}.npy"])


def solution(competition: str) -> tuple[list[str], list[list[str]]]:
    return read_csv((DEMO_DATA / competition / "solution.csv").read_bytes())


# --- whole directory ------------------------------------------------------------------------------------
def test_total_size_within_budget():
    total = sum(path.stat().st_size for path in DEMO_DATA.rglob("*") if path.is_file())
    assert 0 < total <= MAX_TOTAL_BYTES, f"demo data is {total / 1e6:.1f} MB"


def test_readme_documents_regeneration():
    readme = (DEMO_DATA / "README.md").read_text()
    assert "tools/make_demo.py" in readme
    assert "eSpeak" in readme and "ARPAbet" in readme


# --- layout shared by all three -------------------------------------------------------------------------
@pytest.mark.parametrize("competition", COMPETITIONS)
def test_zip_has_one_data_root_and_sample_submission(competition):
    names = read_zip(competition)
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {root_of(competition), "sample_submission.csv"}
    for name in names:
        if name != "sample_submission.csv":
            _, split, kind, filename = name.split("/")
            assert split in SPLITS and kind in ("mfcc", "transcript") and filename.endswith(".npy")
    assert not ids_in(competition, "test-clean", "transcript"), "test transcripts must not ship"


@pytest.mark.parametrize("competition", COMPETITIONS)
def test_zip_is_deflated_with_fixed_timestamps(competition):
    with zipfile.ZipFile(zip_path(competition)) as archive:
        infos = archive.infolist()
    assert {info.compress_type for info in infos} == {zipfile.ZIP_DEFLATED}
    assert len({info.date_time for info in infos}) == 1


@pytest.mark.parametrize("competition", COMPETITIONS)
@pytest.mark.parametrize("split", SPLITS)
def test_split_ids_and_features(competition, split):
    mfcc_ids = ids_in(competition, split, "mfcc")
    assert mfcc_ids, f"{split} is empty"
    assert all(UTTERANCE_ID.match(i) for i in mfcc_ids)
    if split in LABELED_SPLITS:
        assert sorted(ids_in(competition, split, "transcript")) == sorted(mfcc_ids)
    for utterance_id in mfcc_ids:
        x = features(competition, split, utterance_id)
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 28 and x.shape[0] > 0
        assert np.isfinite(x).all()


@pytest.mark.parametrize("competition", COMPETITIONS)
def test_splits_disjoint_in_utterances_and_speakers(competition):
    speakers = {split: {i.split("-")[0] for i in ids_in(competition, split, "mfcc")} for split in SPLITS}
    utterances = {split: set(ids_in(competition, split, "mfcc")) for split in SPLITS}
    assert not utterances["test-clean"] & (utterances["train-clean-100"] | utterances["dev-clean"])
    assert not speakers["train-clean-100"] & speakers["test-clean"]
    assert not speakers["train-clean-100"] & speakers["dev-clean"]


def test_speakers_csv_matches_ids_and_holds_out_voices():
    _, rows = read_csv((DEMO_DATA / "speakers.csv").read_bytes())
    split_of = {speaker_id: split for speaker_id, _, _, split in rows}
    variants = {split: {voice.split("+")[1] for _, _, voice, s in rows if s == split} for split in SPLITS}
    assert not variants["train-clean-100"] & (variants["dev-clean"] | variants["test-clean"])
    for split in SPLITS:
        for utterance_id in ids_in("demo-hw3p2", split, "mfcc"):
            assert split_of[utterance_id.split("-")[0]] == split


def test_demos_share_utterances():
    for split in SPLITS:
        reference = sorted(ids_in("demo-hw1p2", split, "mfcc"))
        assert sorted(ids_in("demo-hw3p2", split, "mfcc")) == reference
        assert sorted(ids_in("demo-hw4p2", split, "mfcc")) == reference


def check_markers(y: np.ndarray) -> list[str]:
    assert y.ndim == 1 and y.dtype.kind == "U"
    assert y[0] == "[SOS]" and y[-1] == "[EOS]"
    inner = [str(t) for t in y[1:-1]]
    assert "[SOS]" not in inner and "[EOS]" not in inner
    return inner


# --- hw1p2 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", LABELED_SPLITS)
def test_hw1p2_transcripts_one_phoneme_per_frame(split):
    for utterance_id in ids_in("demo-hw1p2", split, "mfcc"):
        x = features("demo-hw1p2", split, utterance_id)
        y = transcript("demo-hw1p2", split, utterance_id)
        assert len(y) == x.shape[0] + 2
        inner = check_markers(y)
        assert set(inner) <= set(PHONEMES)
        assert inner[0] == inner[-1] == "[SIL]", "utterances start and end in silence"


def test_hw1p2_labels_are_varied():
    seen = set()
    for utterance_id in ids_in("demo-hw1p2", "train-clean-100", "mfcc"):
        seen.update(str(t) for t in transcript("demo-hw1p2", "train-clean-100", utterance_id)[1:-1])
    assert len(seen) >= 35, f"only {len(seen)} phoneme classes in train"


def test_hw1p2_submission_one_row_per_test_frame():
    test_ids = sorted(ids_in("demo-hw1p2", "test-clean", "mfcc"))
    frames = sum(features("demo-hw1p2", "test-clean", i).shape[0] for i in test_ids)
    header, rows = read_csv(read_zip("demo-hw1p2")["sample_submission.csv"])
    assert header == ["id", "label"]
    assert [int(r[0]) for r in rows] == list(range(frames))
    assert all(r[1] in PHONEMES for r in rows)
    sol_header, sol_rows = solution("demo-hw1p2")
    assert sol_header == ["id", "label", "Usage"]
    assert [r[0] for r in sol_rows] == [r[0] for r in rows]
    assert all(r[1] in PHONEMES for r in sol_rows)


# --- hw3p2 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", LABELED_SPLITS)
def test_hw3p2_transcripts_are_phoneme_sequences(split):
    for utterance_id in ids_in("demo-hw3p2", split, "mfcc"):
        inner = check_markers(transcript("demo-hw3p2", split, utterance_id))
        assert set(inner) <= set(PHONEMES)
        assert inner[0] == inner[-1] == "[SIL]" and len(inner) >= 3
        assert len(inner) < features("demo-hw3p2", split, utterance_id).shape[0]


def test_hw3p2_submission_and_solution():
    test_ids = ids_in("demo-hw3p2", "test-clean", "mfcc")
    header, rows = read_csv(read_zip("demo-hw3p2")["sample_submission.csv"])
    assert header == ["index", "label"]
    assert [int(r[0]) for r in rows] == list(range(len(test_ids)))
    assert all(r[1] and set(r[1]) <= PHONEME_CHARACTERS for r in rows)
    sol_header, sol_rows = solution("demo-hw3p2")
    assert sol_header == ["index", "label", "Usage"]
    assert [r[0] for r in sol_rows] == [r[0] for r in rows]
    for r in sol_rows:
        assert set(r[1]) <= PHONEME_CHARACTERS and r[1][0] == r[1][-1] == "-"


def test_hw3p2_labels_map_from_dev_transcripts_like_solution():
    """The solution's single-character strings use the F22+ map: check it on a labelled split too."""
    for utterance_id in ids_in("demo-hw3p2", "dev-clean", "mfcc"):
        inner = check_markers(transcript("demo-hw3p2", "dev-clean", utterance_id))
        mapped = "".join(CMUDICT_ARPABET[p] for p in inner)
        assert len(mapped) == len(inner)


# --- hw4p2 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", LABELED_SPLITS)
def test_hw4p2_transcripts_are_characters(split):
    for utterance_id in ids_in("demo-hw4p2", split, "mfcc"):
        inner = check_markers(transcript("demo-hw4p2", split, utterance_id))
        assert all(len(c) == 1 for c in inner) and set(inner) <= HW4P2_CHARACTERS
        text = "".join(inner)
        assert text == text.strip() and "  " not in text


def test_hw4p2_submission_and_solution():
    test_ids = ids_in("demo-hw4p2", "test-clean", "mfcc")
    header, rows = read_csv(read_zip("demo-hw4p2")["sample_submission.csv"])
    assert header == ["index", "label"]
    assert [int(r[0]) for r in rows] == list(range(len(test_ids)))
    sol_header, sol_rows = solution("demo-hw4p2")
    assert sol_header == ["index", "label", "Usage"]
    assert [r[0] for r in sol_rows] == [r[0] for r in rows]
    assert all(r[1] and set(r[1]) <= HW4P2_CHARACTERS for r in rows + sol_rows)


def test_hw4p2_test_sentences_not_in_train():
    train = {"".join(check_markers(transcript("demo-hw4p2", "train-clean-100", i)))
             for i in ids_in("demo-hw4p2", "train-clean-100", "mfcc")}
    _, sol_rows = solution("demo-hw4p2")
    assert not train & {r[1] for r in sol_rows}


# --- solutions ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("competition", COMPETITIONS)
def test_solution_usage_split_about_half(competition):
    _, rows = solution(competition)
    usage = [r[2] for r in rows]
    assert set(usage) == {"Public", "Private"}
    assert abs(usage.count("Public") - usage.count("Private")) <= 1


@pytest.mark.parametrize("competition", COMPETITIONS)
def test_solution_not_inside_zip(competition):
    assert not any(name.endswith("solution.csv") for name in read_zip(competition))


@pytest.mark.parametrize("competition", ["demo-hw3p2", "demo-hw4p2"])
def test_solution_rows_follow_sorted_test_filenames(competition):
    """Row i of the solution is the i-th test file in sorted filename order: label length (phonemes or
    characters) grows with the utterance's frame count only when rows and files are paired correctly."""
    test_ids = sorted(ids_in(competition, "test-clean", "mfcc"))
    _, sol_rows = solution(competition)
    assert len(sol_rows) == len(test_ids)
    frames = [features(competition, "test-clean", i).shape[0] for i in test_ids]
    label_lengths = [len(row[1]) for row in sol_rows]
    assert all(n < f for n, f in zip(label_lengths, frames))
    assert np.corrcoef(frames, label_lengths)[0, 1] > 0.5


def test_hw1p2_solution_frames_align_with_sorted_test_utterances():
    """Each test utterance's frames begin and end in silence, so the solution has [SIL] at every
    utterance boundary when the utterances are concatenated in sorted filename order."""
    test_ids = sorted(ids_in("demo-hw1p2", "test-clean", "mfcc"))
    _, sol_rows = solution("demo-hw1p2")
    offset = 0
    for utterance_id in test_ids:
        frames = features("demo-hw1p2", "test-clean", utterance_id).shape[0]
        assert sol_rows[offset][1] == "[SIL]" and sol_rows[offset + frames - 1][1] == "[SIL]"
        offset += frames
    assert offset == len(sol_rows)
