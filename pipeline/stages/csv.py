"""csv: the test hypotheses in the competition's exact submission format, validated against the sample
submission before the file is given its final name. Output: `submission.csv`."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from pipeline.data.kaggle_layout import read_test_order
from pipeline.engine import EngineError, Stage, StageRun
from pipeline.files import sha256_file
from pipeline.submission import validate_submission
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    return {"columns": list(profile.csv_columns), "label_format": profile.label_format,
            "symbols": list(profile.symbols), "char_map": profile.char_map}


def label(params: dict) -> str:
    return "-".join(params["columns"])


def format_label(tokens: list[int], params: dict) -> str:
    if params["label_format"] == "chars":
        return "".join(params["char_map"][t] for t in tokens)
    if params["label_format"] == "int":
        return str(tokens[0])
    if params["label_format"] == "phoneme":
        return params["symbols"][tokens[0]]
    return "".join(params["symbols"][t] for t in tokens)


def frame_rows(classes, params: dict) -> list[tuple[str, str]]:
    """hw1p2: one row per test frame, ids from 0, the class as an int or as its phoneme (label_format)."""
    names = [str(c) for c in range(len(params["symbols"]))] if params["label_format"] == "int" else params["symbols"]
    return [(str(i), names[c]) for i, c in enumerate(classes.tolist())]


def run(run: StageRun) -> dict:
    download = run.inputs["download"]
    facts = download.manifest["metrics"]
    sample = download.dir / facts["sample_submission"]
    hypotheses = json.loads((run.inputs["decode"].dir / "test_hypotheses.json").read_text())
    # the id column is positional: sorted file names, or the order of test_order.csv (S22)
    expected = ([Path(name).stem for name in read_test_order(download.dir / facts["test_order"])[0]]
                if facts.get("test_order") else sorted(hypotheses["ids"]))
    if hypotheses["ids"] != expected:
        raise EngineError(f"{run.inputs['decode'].dir / 'test_hypotheses.json'}: test ids not in "
                          f"{'test_order.csv' if facts.get('test_order') else 'sorted'} order")
    profile = run.profile.reconciled(facts.get("detected"))  # the sample's header and label format win
    params = {**run.params, "columns": list(profile.csv_columns), "label_format": profile.label_format}
    if "frames_file" in hypotheses:  # hw1p2: test_frames.npy holds one class per frame, utterances in id order
        import numpy as np

        rows = frame_rows(np.load(run.inputs["decode"].dir / hypotheses["frames_file"]), params)
    else:
        rows = [(str(i), format_label(tokens, params)) for i, tokens in enumerate(hypotheses["tokens"])]
    final = run.out / "submission.csv"
    draft = run.out / "submission.csv.draft"
    with open(draft, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(params["columns"])
        writer.writerows(rows)
    validate_submission(draft, sample, profile)  # refuses before anything looks final
    os.replace(draft, final)
    run.log(f"{len(rows)} rows → {final}")
    return {"rows": len(rows), "sha256": sha256_file(final)}


STAGE = Stage(name="csv", upstream=("download", "decode"),
              params=params, label=label, run=run)
