"""hw4p2 on a tiny Kaggle-layout replica with the `tiny` recipe, what only seq2seq has: uppercase text labels, top-k
by dev distance, the teacher-forcing schedule, attention PNGs, and greedy/beam/oracle figures with their timings.
The contract the three families share (run, CSV, ledger, cache, select) is in test_pipeline_contract.py."""
from __future__ import annotations

import json


from pipeline.stages.csv import format_label
from pipeline.submission import read_rows
from tests.test_pipeline_contract import finished_fixture


finished = finished_fixture("demo-hw4p2")


def test_csv_labels_are_uppercase_text(finished):
    _, profile, pipeline = finished
    _, rows = read_rows(pipeline.plan["csv"].dir / "submission.csv")
    assert len(rows) == 5
    assert all(r[1] == r[1].upper() and set(r[1]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ") for r in rows)
    symbols = list(profile.symbols)
    assert format_label([symbols.index("H"), symbols.index("I"), symbols.index(" ")],
                        {"label_format": "text", "symbols": symbols}) == "HI "


def test_train_keeps_top_k_by_dev_distance_and_plots_attention(finished):
    _, _, pipeline = finished
    train = pipeline.plan["train"].dir
    index = json.loads((train / "checkpoints" / "index.json").read_text())
    assert index["metric"] == "dev_dist" and index["direction"] == "min"
    assert all("-dist" in e["file"] for e in index["checkpoints"])
    history = json.loads((train / "history.json").read_text())
    assert [r["tf_rate"] for r in history] == [1.0, 0.9]           # tiny.yaml: linear, step 0.1 every epoch
    assert sorted(p.name.split("-")[0] for p in (train / "attention").glob("*.png")) == ["epoch001", "epoch002"]
    assert (train / "attention").glob("*.png").__next__().read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_decode_writes_sorted_test_hypotheses_and_reports_greedy_beam_oracle(finished):
    _, profile, pipeline = finished
    decode = pipeline.plan["decode"].dir
    hypotheses = json.loads((decode / "test_hypotheses.json").read_text())
    assert hypotheses["ids"] == sorted(hypotheses["ids"]) and len(hypotheses["tokens"]) == 5
    assert all(3 <= t < len(profile.symbols) for tokens in hypotheses["tokens"] for t in tokens)
    metrics = pipeline.plan["decode"].artifact.manifest["metrics"]
    assert metrics["dev_oracle"] <= min(metrics["dev_beam"], metrics["dev_greedy"]) + 1e-9
    assert {"dev_greedy_seconds", "dev_beam_seconds", "test_seconds"} <= set(metrics)
