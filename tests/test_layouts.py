"""Layout variants the formats doc reports, written by the replica helper against what a profile declares:
the download stage detects them, records declared vs detected, and normalize/csv follow the data."""
from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np
import pytest

from pipeline.data.kaggle_layout import DataError, detect_layout, read_test_order, read_transcript
from pipeline.data.store import FeatureStore
from pipeline.engine import Pipeline
from pipeline.stages import download, normalize
from pipeline.stages.download import with_local_data
from pipeline.submission import SubmissionError, judge_locally, validate_submission
from pipeline.tasks.profiles import HW1P2_PHONEMES_S22, PROFILES
from tests.kaggle_replica import make_replica
from tests.test_profiles import replica_pipeline

SMALL = {"n_train": 4, "n_dev": 2, "n_test": 3}


def data_pipeline(tmp_path, profile) -> Pipeline:
    return Pipeline(profile, {"normalize": {"method": "cmvn"}}, [download.STAGE, normalize.STAGE],
                    artifacts_root=tmp_path / "artifacts", submissions_root=tmp_path / "submissions",
                    options={"progress": False})


def downloaded(tmp_path, name, **variant):
    profile = make_replica(tmp_path / "competition", name, **SMALL, **variant)
    pipeline = data_pipeline(tmp_path, profile)
    pipeline.run()
    return pipeline, pipeline.plan["download"].artifact.manifest["metrics"]


def raw_root(pipeline):
    facts = pipeline.plan["download"].artifact.manifest["metrics"]
    return pipeline.plan["download"].dir / facts["data_root"]


# ---- detection of each conflicting fact -------------------------------------------------------------------------

@pytest.mark.parametrize("name, written", [("hw4p2-f25", "TF"), ("hw4p2-s25", "FT")])
def test_fbank_orientation_is_detected_by_the_80_axis(tmp_path, name, written):
    pipeline, facts = downloaded(tmp_path, name, feature_layout=written)
    assert facts["detected"]["feature_layout"] == written
    assert ("feature_layout" in facts["differences"]) == (written != PROFILES[name].feature_layout)
    assert facts["differences"].get("feature_layout", {}).get("flagged", True)
    store = FeatureStore.open(pipeline.plan["normalize"].dir / "train")
    raw = np.load(raw_root(pipeline) / "train-clean-100" / "fbank" / f"{store.ids[0]}.npy")
    frames = raw if written == "TF" else raw.T
    assert store.dim == 80 and store.features(0).shape == frames.shape
    expected = (frames - frames.mean(0)) / (frames.std(0) + 1e-8)
    assert np.allclose(store.features(0), expected, atol=1e-4)


def test_unverified_feature_dim_follows_the_data(tmp_path):
    pipeline, facts = downloaded(tmp_path, "hw1p2-s23", feature_dim=28)  # declared 27 (unverified)
    assert facts["differences"]["feature_dim"] == {"declared": 27, "detected": 28, "flagged": True}
    assert "feature_dim 27 → 28" in facts["summary"]
    assert FeatureStore.open(pipeline.plan["normalize"].dir / "dev").dim == 28


def test_verified_feature_dim_mismatch_is_one_error_naming_the_file(tmp_path):
    profile = make_replica(tmp_path / "competition", "hw3p2-f25", **SMALL, feature_dim=27)
    with pytest.raises(DataError) as error:
        data_pipeline(tmp_path, profile).run(only="download")
    message = str(error.value)
    assert "\n" not in message and ".npy: mfcc array of shape" in message and "expects (T,28)" in message
    assert "hw3p2-s24" in message  # the profiles that would fit 27-d features


@pytest.mark.parametrize("name, markers, flagged", [
    ("hw4p2-f22", ("[SOS]", "[EOS]"), True),     # the doc is unsure which markers F22 HW4P2 used
    ("hw3p2-f25", ("<sos>", "<eos>"), False),    # not flagged: still read, and reported as unexpected
    ("hw4p2-f25", ("[SOS]", "[EOS]"), True),     # bare text declared, markers found
])
def test_transcript_markers_are_detected(tmp_path, name, markers, flagged):
    pipeline, facts = downloaded(tmp_path, name, markers=markers)
    assert facts["detected"]["markers"] == list(markers)
    assert facts["differences"]["markers"]["flagged"] is flagged
    assert ("not flagged" in facts["summary"]) is not flagged
    store = FeatureStore.open(pipeline.plan["normalize"].dir / "train")
    tokens = np.load(raw_root(pipeline) / "train-clean-100" / PROFILES[name].transcript_dir / f"{store.ids[0]}.npy")
    assert [store.symbols[i] for i in store.labels(0)] == tokens.tolist()[1:-1]


def test_transcript_folder_variant(tmp_path):
    pipeline, facts = downloaded(tmp_path, "hw3p2-s23", transcript_dir="transcripts")  # writeup vs code
    assert facts["detected"]["transcript_dir"] == "transcripts" and facts["differences"]["transcript_dir"]["flagged"]
    assert len(FeatureStore.open(pipeline.plan["normalize"].dir / "train")) == 4


def test_silence_spelling_of_older_semesters_is_accepted(tmp_path):
    pipeline, _ = downloaded(tmp_path, "hw1p2-f24", symbols=tuple(HW1P2_PHONEMES_S22))  # 'SIL' in an F24 layout
    store = FeatureStore.open(pipeline.plan["normalize"].dir / "train")
    assert store.symbols[0] == "[SIL]" and store.labels_array is not None


@pytest.mark.parametrize("written", ["int", "phoneme"])
def test_hw1p2_label_format_comes_from_the_sample(tmp_path, written):
    pipeline, facts = downloaded(tmp_path, "hw1p2-s24", label_format=written)  # writeup: int; starter: strings
    assert facts["detected"]["label_format"] == written
    assert ("label_format" in facts["differences"]) == (written == "int")
    sample = pipeline.plan["download"].dir / facts["sample_submission"]
    profile = PROFILES["hw1p2-s24"]  # declares phoneme strings: validation follows the sample anyway
    with open(sample, newline="") as handle:
        rows = list(csv.reader(handle))
    good = tmp_path / "good.csv"
    bad = tmp_path / "bad.csv"
    other = {"int": lambda r: [r[0], "[SIL]"], "phoneme": lambda r: [r[0], "0"]}[written]
    for path, body in ((good, rows[1:]), (bad, [other(r) for r in rows[1:]])):
        with open(path, "w", newline="") as handle:
            csv.writer(handle).writerows([rows[0], *body])
    validate_submission(good, sample, profile)
    with pytest.raises(SubmissionError, match="not in the hw1p2-s24 label alphabet"):
        validate_submission(bad, sample, profile)


def test_csv_header_comes_from_the_sample_and_the_csv_follows_it(tmp_path):
    profile = make_replica(tmp_path / "competition", "hw3p2-f22", **SMALL, csv_columns=("id", "label"))
    pipeline = replica_pipeline(tmp_path, profile)
    pipeline.run(stop="csv")
    facts = pipeline.plan["download"].artifact.manifest["metrics"]
    assert facts["differences"]["csv_columns"] == {"declared": ["id", "predictions"], "detected": ["id", "label"],
                                                   "flagged": True}
    assert facts["evidence"]["sample_submission"].endswith("test-clean/transcript/random_submission.csv")
    with open(pipeline.plan["csv"].dir / "submission.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["id", "label"]


@pytest.mark.parametrize("header", [True, False])
def test_s22_test_order_with_or_without_header(tmp_path, header):
    profile = make_replica(tmp_path / "competition", "hw3p2-s22", **SMALL, test_order_header=header)
    pipeline = replica_pipeline(tmp_path, profile)
    pipeline.run(stop="csv")
    facts = pipeline.plan["download"].artifact.manifest["metrics"]
    names, had_header = read_test_order(pipeline.plan["download"].dir / facts["test_order"])
    assert had_header is header and len(names) == 3
    hypotheses = json.loads((pipeline.plan["decode"].dir / "test_hypotheses.json").read_text())
    assert hypotheses["ids"] == [n.removesuffix(".npy") for n in names] != sorted(hypotheses["ids"])
    with open(pipeline.plan["csv"].dir / "submission.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "predictions"] and [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert set("".join(r[1] for r in rows[1:])) <= set(profile.char_map[1:])  # the S22 map ('.', '?', …)


def test_test_order_naming_a_missing_file_is_one_error(tmp_path):
    profile = make_replica(tmp_path / "competition", "hw4p2-s22", **SMALL)
    data = tmp_path / "unpacked"
    import zipfile

    with zipfile.ZipFile(profile.local_data) as archive:
        archive.extractall(data)
    order = next(data.rglob("test_order.csv"))
    order.write_text(order.read_text().replace("102-2000-0000.npy", "999-9999-9999.npy"))
    with pytest.raises(DataError, match="999-9999-9999.npy is in the test order but not here"):
        data_pipeline(tmp_path, dataclasses.replace(profile, local_data=data)).run(only="download")


def test_hw4p2_bare_text_is_split_into_characters(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, np.array("HI THERE"))  # a 0-d string array
    assert read_transcript(path, None, text=True) == list("HI THERE")
    np.save(path, np.array(list("HI")))
    assert read_transcript(path, None, text=True) == ["H", "I"]


def test_mixed_orientations_are_refused(tmp_path):
    profile = make_replica(tmp_path / "competition", "hw4p2-f25", **SMALL)
    data = tmp_path / "unpacked"
    import zipfile

    with zipfile.ZipFile(profile.local_data) as archive:
        archive.extractall(data)
    first = sorted(data.rglob("train-clean-100/fbank/*.npy"))[1]
    np.save(first, np.load(first).T)
    with pytest.raises(DataError, match="disagrees with"):
        detect_layout(data, profile)


# ---- local data (--data PATH) -----------------------------------------------------------------------------------

def test_local_folder_is_linked_and_remembered(tmp_path):
    profile = make_replica(tmp_path / "competition", "hw3p2-f25", **SMALL)
    folder = tmp_path / "kaggle-input"
    import zipfile

    with zipfile.ZipFile(profile.local_data) as archive:
        archive.extractall(folder)
    declared = dataclasses.replace(profile, local_data=None)
    linked = with_local_data(declared, folder, tmp_path / "artifacts")
    pipeline = data_pipeline(tmp_path, linked)
    pipeline.run()
    assert os.path.islink(pipeline.plan["download"].dir / "data")
    assert pipeline.plan["download"].artifact.manifest["metrics"]["kind"] == "folder"
    again = with_local_data(declared, None, tmp_path / "artifacts")  # a later command without --data
    assert again.local_data == folder.resolve()
    assert [line.state for line in data_pipeline(tmp_path, again).status()] == ["fresh", "fresh"]
    extra = min(folder.rglob("dev-clean/mfcc/*.npy"))
    np.save(extra.with_name("999-1-0001.npy"), np.load(extra))  # the folder changes → download is stale
    np.save(extra.with_name("999-1-0001.npy").parent.parent / "transcript" / "999-1-0001.npy",
            np.array(["[SOS]", "AH", "[EOS]"]))
    assert data_pipeline(tmp_path, again).status()[0].state == "stale"


def test_local_data_errors_are_one_line(tmp_path):
    not_zip = tmp_path / "data.zip"
    not_zip.write_text("hello")
    with pytest.raises(DataError, match="not a zip archive"):
        with_local_data(PROFILES["hw3p2-f25"], not_zip, tmp_path / "artifacts")
    with pytest.raises(DataError, match="no such file or folder"):
        with_local_data(PROFILES["hw3p2-f25"], tmp_path / "missing", tmp_path / "artifacts")


# ---- the local judge per metric -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, perfect", [("hw1p2-s22", 100.0), ("hw3p2-s22", 0.0), ("hw4p2-s25", 0.0)])
def test_local_judge_scores_the_solution_perfectly(tmp_path, name, perfect):
    profile = make_replica(tmp_path / "competition", name, **SMALL)
    with open(profile.embedded_solution, newline="") as handle:
        rows = [row[:2] for row in csv.reader(handle)]
    path = tmp_path / "perfect.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    assert judge_locally(path, profile) == {"public": perfect, "private": perfect}
