"""CSV validation against the sample submission, the local judge and the ledger."""
from __future__ import annotations

import csv
import zipfile

import pytest

from pipeline.submission import SubmissionError, read_ledger, validate_submission
from pipeline.stages.submit import submit_csv
from tests.kaggle_replica import make_replica


@pytest.fixture
def competition(tmp_path):
    profile = make_replica(tmp_path / "competition")
    with zipfile.ZipFile(profile.embedded_zip) as archive:
        archive.extract("sample_submission.csv", tmp_path)
    return profile, tmp_path / "sample_submission.csv"


def solution_rows(profile):
    with open(profile.embedded_solution, newline="") as handle:
        return list(csv.reader(handle))[1:]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_perfect_submission_scores_zero_and_gets_a_ledger_row(tmp_path, competition):
    profile, sample = competition
    rows = [row[:2] for row in solution_rows(profile)]
    path = write_csv(tmp_path / "perfect.csv", ["index", "label"], rows)
    result = submit_csv(profile, path, sample, tmp_path / "submissions", message="perfect")
    assert result["public"] == 0.0 and result["private"] == 0.0
    ledger = read_ledger(tmp_path / "submissions")
    assert len(ledger) == 1 and ledger[0]["message"] == "perfect" and ledger[0]["target"] == "local"
    assert ledger[0]["csv_sha256"] == result["csv_sha256"]


def test_judge_scores_mean_levenshtein_per_usage(tmp_path, competition):
    profile, sample = competition
    truth = solution_rows(profile)
    rows = [[i, label + "ab"] if usage == "Public" else [i, label] for i, label, usage in truth]
    path = write_csv(tmp_path / "off.csv", ["index", "label"], rows)
    result = submit_csv(profile, path, sample, tmp_path / "submissions")
    assert result["public"] == 2.0 and result["private"] == 0.0


@pytest.mark.parametrize("mutate, message", [
    (lambda h, r: (["id", "label"], r), "header 'id,label', expected 'index,label'"),
    (lambda h, r: (h, r[:-1]), "4 rows, expected 5"),
    (lambda h, r: (h, [["9", r[0][1]]] + r[1:]), "line 2 index '9', expected '0'"),
    (lambda h, r: (h, [[r[0][0], "-?-"]] + r[1:]), "contains '?'"),
    (lambda h, r: (h, [[r[0][0]]] + r[1:]), "line 2 has 1 fields"),
])
def test_bad_csv_is_refused_with_one_line_and_no_ledger_row(tmp_path, competition, mutate, message):
    profile, sample = competition
    header, rows = mutate(["index", "label"], [row[:2] for row in solution_rows(profile)])
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(SubmissionError) as error:
        submit_csv(profile, path, sample, tmp_path / "submissions")
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)
    assert read_ledger(tmp_path / "submissions") == []


def test_validate_accepts_the_sample_itself(competition):
    profile, sample = competition
    assert len(validate_submission(sample, sample, profile)) == 5
