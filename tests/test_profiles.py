"""Every competition profile: its facts, --task resolution, and its pipeline on a tiny Kaggle-layout replica.

Every family has train/decode stages and a seconds-fast `configs/<family>/tiny.yaml`, so every profile's replica
runs download → … → csv and the CSV is validated and judged.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pipeline.config import CONFIG_DIR, load_recipe
from pipeline.data.kaggle_layout import read_test_order
from pipeline.data.store import FeatureStore
from pipeline.engine import Pipeline
from pipeline.stages import download, normalize
from pipeline.submission import judge_locally, validate_submission
from pipeline.tasks import stages_for
from pipeline.tasks.profiles import FAMILY_DEFAULT, HW3P2_LABELS, HW3P2_LABELS_S22, PROFILES, UnknownTask, \
    resolve_profile
from tests.kaggle_replica import make_replica

REAL = [name for name, p in PROFILES.items() if not p.demo]
SEMESTER_ORDER = {f"{season}{year}": year * 2 + (season == "F") for year in range(20, 30) for season in "SF"}


@pytest.mark.parametrize("family", ["hw1p2", "hw3p2", "hw4p2"])
def test_every_family_has_the_full_pipeline_and_a_tiny_recipe(family):
    assert [s.name for s in stages_for(family)] == ["download", "normalize", "train", "select", "decode", "csv",
                                                    "submit"]
    assert (CONFIG_DIR / family / "tiny.yaml").exists()


@pytest.mark.parametrize("family", ["hw1p2", "hw3p2", "hw4p2"])
def test_the_family_table_names_modules_that_exist(family):
    import importlib

    from pipeline.models.load import ARCHS
    from pipeline.tasks import FAMILIES

    entry = FAMILIES[family]
    assert entry.name == family and set(entry.archs) <= set(ARCHS)
    for arch in entry.archs:
        assert hasattr(importlib.import_module(ARCHS[arch]), "build_from_dict")
    assert hasattr(importlib.import_module(f"pipeline.training.{entry.kind}"), "make_task")
    assert {"model", "train"} <= set(entry.recipe_sections())
    assert {p.family for p in PROFILES.values()} == set(FAMILIES)


def replica_pipeline(tmp_path, profile) -> Pipeline:
    return Pipeline(profile, load_recipe(profile.family, "tiny"), stages_for(profile.family),
                    artifacts_root=tmp_path / "artifacts", submissions_root=tmp_path / "submissions",
                    options={"wandb": "off", "progress": False}, config_name="tiny")


# ---- every profile end to end on its replica ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PROFILES))
def test_replica_reaches_a_valid_csv(tmp_path, name):
    import torch

    torch.set_num_threads(1)
    profile = make_replica(tmp_path / "competition", name, n_train=6, n_dev=3, n_test=4)
    pipeline = replica_pipeline(tmp_path, profile)
    pipeline.run(stop="csv")

    facts = pipeline.plan["download"].artifact.manifest["metrics"]
    assert facts["differences"] == {}, facts["summary"]  # the replica is written exactly as the profile declares
    assert facts["detected"]["feature_dim"] == profile.feature_dim
    assert facts["detected"]["feature_layout"] == profile.feature_layout
    assert list(facts["counts"].values()) == [6, 3, 4]
    test = FeatureStore.open(pipeline.plan["normalize"].dir / "test")
    assert test.dim == profile.feature_dim and len(test) == 4
    if profile.test_order:  # S22: the store keeps test_order.csv's order, which the replica shuffled
        order = read_test_order(pipeline.plan["download"].dir / facts["test_order"])[0]
        assert test.ids == [n.removesuffix(".npy") for n in order] and test.ids != sorted(test.ids)
    else:
        assert test.ids == sorted(test.ids)
    submission = pipeline.plan["csv"].dir / "submission.csv"
    sample = pipeline.plan["download"].dir / facts["sample_submission"]
    rows = validate_submission(submission, sample, profile)
    with open(submission, newline="") as handle:
        assert next(csv.reader(handle)) == list(profile.csv_columns)
    with open(sample, newline="") as handle:
        assert len(rows) == sum(1 for _ in csv.reader(handle)) - 1
    scores = judge_locally(submission, profile)
    assert set(scores) == {"public", "private"} and all(np.isfinite(list(scores.values())))


@pytest.mark.parametrize("name", [n for n, p in PROFILES.items() if p.demo])
def test_committed_demo_data_is_detected_as_declared(tmp_path, name):
    pipeline = Pipeline(PROFILES[name], {"normalize": {"method": "cmvn"}}, [download.STAGE, normalize.STAGE],
                        artifacts_root=tmp_path, submissions_root=tmp_path, options={"progress": False})
    pipeline.run(only="download")
    facts = pipeline.plan["download"].artifact.manifest["metrics"]
    assert facts["differences"] == {} and facts["summary"].endswith("all as declared")


# ---- the facts --------------------------------------------------------------------------------------------------

def test_every_semester_of_the_formats_doc_has_a_profile():
    semesters = {family: sorted((p.semester for p in PROFILES.values() if p.family == family and not p.demo),
                                key=SEMESTER_ORDER.get) for family in ("hw1p2", "hw3p2", "hw4p2")}
    assert semesters == {"hw1p2": ["S22", "F22", "S23", "F23", "S24", "F24", "S25", "S26"],
                         "hw3p2": ["S22", "F22", "S23", "F23", "S24", "F24", "F25"],
                         "hw4p2": ["S22", "F22", "S23", "F23", "S24", "F24", "S25", "F25", "S26"]}
    for family, name in FAMILY_DEFAULT.items():  # a family resolves to its latest semester
        assert resolve_profile(family).name == name
        assert resolve_profile(family).semester == semesters[family][-1]


@pytest.mark.parametrize("name, dim, kind", [
    ("hw1p2-s22", 13, "mfcc"), ("hw1p2-f22", 15, "mfcc"), ("hw1p2-s24", 27, "mfcc"), ("hw1p2-f24", 28, "mfcc"),
    ("hw3p2-s23", 27, "mfcc"), ("hw3p2-f25", 28, "mfcc"), ("hw4p2-s24", 27, "mfcc"), ("hw4p2-f24", 80, "fbank"),
])
def test_feature_dims_follow_the_formats_doc(name, dim, kind):
    assert (PROFILES[name].feature_dim, PROFILES[name].feature_dir) == (dim, kind)


def test_label_maps_per_semester():
    assert "".join(HW3P2_LABELS) == " -Gfm@runiWvUoaRhzkCweZtEyAbpTDcgljOSdYsI"
    assert len(HW3P2_LABELS_S22) == len(set(HW3P2_LABELS_S22)) == 41
    s22 = PROFILES["hw3p2-s22"]
    assert s22.char_map[s22.symbols.index("SIL")] == "." and s22.char_map[s22.symbols.index("Y")] == "?"
    assert s22.char_map[s22.symbols.index("AH")] == "h"
    f25 = PROFILES["hw3p2-f25"]
    assert f25.symbols[0] == "" and f25.char_map[f25.symbols.index("[SIL]")] == "-"
    for name in ("hw1p2-s22", "hw1p2-f24"):
        assert len(PROFILES[name].symbols) == 40
    assert PROFILES["hw1p2-s22"].symbols[0] == "SIL" and PROFILES["hw1p2-f24"].symbols[0] == "[SIL]"
    sizes = {name: len(PROFILES[name].symbols) for name in ("hw4p2-s22", "hw4p2-s24", "hw4p2-f24", "hw4p2-s25")}
    assert sizes == {"hw4p2-s22": 30, "hw4p2-s24": 31, "hw4p2-f24": 31, "hw4p2-s25": 35}
    assert PROFILES["hw4p2-f24"].special("sos") == PROFILES["hw4p2-f24"].special("eos") == 0
    assert PROFILES["hw4p2-s25"].special("pad") == 0 and PROFILES["hw4p2-s25"].special("eos") == 4


def test_csv_facts_metric_and_limits():
    assert PROFILES["hw1p2-s22"].label_format == "int" and PROFILES["hw1p2-s26"].label_format == "phoneme"
    assert PROFILES["hw3p2-s22"].csv_columns == ("id", "predictions")
    assert PROFILES["hw3p2-f25"].csv_columns == ("index", "label")
    assert PROFILES["hw4p2-f25"].csv_columns == ("id", "transcription") and PROFILES["hw4p2-f25"].metric == "cer"
    assert PROFILES["hw3p2-f25"].param_limit == 20_000_000 and PROFILES["hw4p2-f25"].param_limit == 30_000_000
    for profile in PROFILES.values():
        assert profile.metric_direction == ("max" if profile.metric == "accuracy" else "min")
        assert (profile.rules_url is None) == (profile.slug is None or profile.demo)
    assert PROFILES["hw3p2-s24"].rules_url == "https://www.kaggle.com/competitions/hw3p2asr-s24/rules"
    # the facts the formats doc marks as conflicting are detected from the data
    assert "label_format" in PROFILES["hw1p2-s24"].conflicts
    assert "feature_layout" in PROFILES["hw4p2-s25"].conflicts
    assert "feature_dim" in PROFILES["hw1p2-s23"].conflicts


@pytest.mark.parametrize("task, name", [
    ("hw3p2", "hw3p2-f25"), ("hw3p2-s24", "hw3p2-s24"), ("HW3P2-S24", "hw3p2-s24"), ("hw3p2asr-s24", "hw3p2-s24"),
    ("11-785-s24-hw3p2", "hw3p2-s24"), ("11785-hw1p2-f24", "hw1p2-f24"), ("demo-hw3p2", "demo-hw3p2"),
    ("11785-hw-3-p-2-fall-2025-slack", "hw3p2-f25"),
])
def test_task_resolution(task, name):
    assert resolve_profile(task).name == name


@pytest.mark.parametrize("task, message", [("hw9p9", "unknown task"), ("hw4p2_data", "name the profile")])
def test_bad_task_is_one_line(task, message):
    with pytest.raises(UnknownTask, match=message) as error:
        resolve_profile(task)
    assert "\n" not in str(error.value)


def test_competitions_table_lists_every_profile():
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["competitions"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for name in PROFILES:
        assert name in result.output
    assert "(80,T) fbank" in result.output and "id,transcription" in result.output


def test_manifest_records_declared_and_detected(tmp_path):
    profile = make_replica(tmp_path / "c", "hw3p2-s24", n_train=3, n_dev=2, n_test=2)
    pipeline = replica_pipeline(tmp_path, profile)
    pipeline.run(only="download")
    manifest = json.loads((pipeline.plan["download"].dir / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["declared"] == profile.declared()
    assert metrics["detected"]["sample_submission"] == "random_submission.csv"
    assert metrics["evidence"]["sample_submission"].endswith("test-clean/random_submission.csv")
