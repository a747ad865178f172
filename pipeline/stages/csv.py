"""csv: the test hypotheses in the competition's exact submission format, validated against the sample
submission before the file is given its final name. Output: `submission.csv`."""
from __future__ import annotations

import csv
import json
import os

from pipeline.engine import EngineError, Stage, StageRun, sha256_file
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


def run(run: StageRun) -> dict:
    download = run.inputs["download"]
    sample = download.dir / download.manifest["metrics"]["sample_submission"]
    hypotheses = json.loads((run.inputs["decode"].dir / "test_hypotheses.json").read_text())
    if hypotheses["ids"] != sorted(hypotheses["ids"]):  # the index column is positional: sorted file names
        raise EngineError(f"{run.inputs['decode'].dir / 'test_hypotheses.json'}: test ids not in sorted order")
    rows = [(str(i), format_label(tokens, run.params)) for i, tokens in enumerate(hypotheses["tokens"])]
    final = run.out / "submission.csv"
    draft = run.out / "submission.csv.draft"
    with open(draft, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(run.params["columns"])
        writer.writerows(rows)
    validate_submission(draft, sample, run.profile)  # refuses before anything looks final
    os.replace(draft, final)
    run.log(f"{len(rows)} rows → {final}")
    return {"rows": len(rows), "sha256": sha256_file(final)}


STAGE = Stage(name="csv", upstream=("download", "decode"), code=("pipeline.stages.csv", "pipeline.submission"),
              params=params, label=label, run=run)
