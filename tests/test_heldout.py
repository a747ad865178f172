"""The held-out-accent evaluation set (normalize writes it, every decode scores it) and the final fit on train+dev."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.store import FeatureStore, StoreError, merge_stores
from pipeline.decoding.metrics import levenshtein_mean
from pipeline.tasks.profiles import DEMO_HELDOUT, PROFILES

ROOT = Path(__file__).resolve().parent.parent
DEMO_SPEAKERS = ROOT / "pipeline" / "demo_data" / "speakers.csv"


def asrpipe(*args: str, artifacts: Path) -> subprocess.CompletedProcess:
    places = ["--artifacts", str(artifacts / "a")] + (["--submissions", str(artifacts / "s")] if args[0] == "run" else [])
    result = subprocess.run([sys.executable, "-m", "cli.main", *args, *places], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def stage_dir(artifacts: Path, task: str, stage: str, contains: str = "") -> Path:
    found = [p for p in (artifacts / "a" / task / stage).iterdir() if (p / ".done").exists() and contains in p.name]
    assert len(found) == 1, found
    return found[0]


def test_the_heldout_speakers_and_accents_are_unseen():
    with open(DEMO_SPEAKERS, newline="") as handle:
        demo = list(csv.DictReader(handle))
    with zipfile.ZipFile(DEMO_HELDOUT) as archive:
        heldout = list(csv.DictReader(io.StringIO(archive.read("heldout-accents/speakers.csv").decode())))
        names = archive.namelist()
    accent = lambda row: row["espeak_voice"].split("+")[0]  # noqa: E731
    assert {accent(r) for r in heldout} and not {accent(r) for r in heldout} & {accent(r) for r in demo}
    assert not {r["speaker_id"] for r in heldout} & {r["speaker_id"] for r in demo}
    train_variants = {r["espeak_voice"].split("+")[1] for r in demo if r["split"] == "train-clean-100"}
    assert not {r["espeak_voice"].split("+")[1] for r in heldout} & train_variants
    ids = {Path(n).stem for n in names if "/mfcc/" in n}
    for family in ("hw1p2", "hw3p2", "hw4p2"):
        assert {Path(n).stem for n in names if f"/transcript-{family}/" in n} == ids
    assert all(PROFILES[name].heldout == DEMO_HELDOUT for name in ("demo-hw1p2", "demo-hw3p2", "demo-hw4p2"))
    assert all(p.heldout is None for p in PROFILES.values() if not p.demo)


def test_normalize_writes_the_heldout_store_like_dev(tmp_path):
    asrpipe("run", "--task", "demo-hw1p2", "--config", "tiny", "--to", "normalize", artifacts=tmp_path)
    normalized = stage_dir(tmp_path, "demo-hw1p2", "normalize")
    heldout, dev = FeatureStore.open(normalized / "heldout"), FeatureStore.open(normalized / "dev")
    assert len(heldout) == 120 and heldout.meta["label_kind"] == "frame" and heldout.dim == dev.dim
    assert np.array_equal(heldout.label_offsets, heldout.offsets)           # one label per frame
    first = np.asarray(heldout.features(0))
    np.testing.assert_allclose(first.mean(axis=0), 0, atol=1e-4)              # per-utterance CMVN, as dev
    manifest = json.loads((normalized / "manifest.json").read_text())
    assert manifest["params"]["heldout_sha256"] and manifest["metrics"]["heldout_utterances"] == 120

    # the raw train features' typical std per dimension, for the frequency warp
    stats = json.loads((normalized / "feature_stats.json").read_text())
    with zipfile.ZipFile(PROFILES["demo-hw1p2"].embedded_zip) as archive:
        raw = [np.load(io.BytesIO(archive.read(n))) for n in sorted(archive.namelist()) if "/train-clean-100/mfcc/" in n]
    assert stats["kind"] == "mfcc"
    np.testing.assert_allclose(stats["std"], np.mean([x.std(axis=0) for x in raw], axis=0), rtol=1e-4)


def test_the_ctc_decode_scores_the_heldout_speakers(tmp_path):
    asrpipe("run", "--task", "demo-hw3p2", "--config", "tiny", "--to", "decode", artifacts=tmp_path)
    decode = stage_dir(tmp_path, "demo-hw3p2", "decode")
    metrics = json.loads((decode / "manifest.json").read_text())["metrics"]
    results = json.loads((decode / "heldout_results.json").read_text())
    assert len(results["reference"]) == len(results["beam"]) == 120
    assert metrics["heldout_beam"] == pytest.approx(levenshtein_mean(results["reference"], results["beam"]))
    assert metrics["heldout_greedy"] == pytest.approx(levenshtein_mean(results["reference"], results["greedy"]))
    assert all(set(ref) <= set(PROFILES["demo-hw3p2"].char_map) for ref in results["reference"])


@pytest.mark.slow
def test_the_attention_decode_scores_the_heldout_speakers(tmp_path):
    asrpipe("run", "--task", "demo-hw4p2", "--config", "tiny", "--to", "decode", "--set", "train.quick=0.1",
            artifacts=tmp_path)
    decode = stage_dir(tmp_path, "demo-hw4p2", "decode")
    metrics = json.loads((decode / "manifest.json").read_text())["metrics"]
    results = json.loads((decode / "heldout_results.json").read_text())
    assert metrics["heldout_beam"] == pytest.approx(levenshtein_mean(results["reference"], results["beam"]))
    assert "heldout_repeated_phrases" in metrics and all(ref.isupper() for ref in results["reference"])


def test_a_final_fit_trains_on_train_and_dev_as_its_own_run(tmp_path):
    asrpipe("run", "--task", "demo-hw1p2", "--config", "tiny", "--to", "decode", artifacts=tmp_path)
    asrpipe("run", "--task", "demo-hw1p2", "--config", "tiny", "--to", "decode", "--set", "train.fit_on=train+dev",
            artifacts=tmp_path)
    plain = [p for p in (tmp_path / "a" / "demo-hw1p2" / "train").iterdir() if p.is_dir() and "final-fit" not in p.name]
    fitted = stage_dir(tmp_path, "demo-hw1p2", "train", "-final-fit")
    assert len(plain) == 1 and plain[0].name.split("-")[-1] != fitted.name.split("-")[-1]   # its own key
    merged = FeatureStore.open(fitted / "train+dev")
    normalized = stage_dir(tmp_path, "demo-hw1p2", "normalize")
    train, dev = (FeatureStore.open(normalized / name) for name in ("train", "dev"))
    assert merged.ids == train.ids + dev.ids and len(merged.labels_array) == len(train.labels_array) + len(dev.labels_array)
    np.testing.assert_array_equal(merged.features(len(train)), dev.features(0))
    history = json.loads((fitted / "history.json").read_text())
    assert history and len(list((tmp_path / "a" / "demo-hw1p2" / "decode").glob("*/.done"))) == 2

    # the runs table shows each run's held-out figure, from its own decode
    rows = list(csv.DictReader(io.StringIO(asrpipe("runs", "--task", "demo-hw1p2", "--format", "csv",
                                                   artifacts=tmp_path).stdout)))
    decodes = [json.loads(m.read_text()) for m in (tmp_path / "a" / "demo-hw1p2" / "decode").glob("*/manifest.json")]
    by_train = {d["upstream"]["train"]["key"][:8]: d["metrics"]["heldout_acc"] for d in decodes}
    assert {row["key"]: float(row["heldout"]) for row in rows} == by_train


def test_merging_stores_with_shared_ids_is_refused(tmp_path):
    meta = {"dim": 2, "partition": "x", "label_kind": "sequence", "symbols": ["a", "b"], "normalization": "cmvn"}
    one = FeatureStore.write(tmp_path / "one", ["u1"], [3], iter([np.zeros((3, 2), np.float32)]),
                             iter([np.array([1])]), meta)
    with pytest.raises(StoreError, match="share utterance ids"):
        merge_stores([one, one], tmp_path / "both")
