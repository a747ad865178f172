"""submit: score the CSV and record it in `submissions/ledger.csv`.

Demo competitions are judged locally against their held-back solution (ledger target "local"); Kaggle submission
plugs in here for real competitions. A CSV that fails validation is refused with one line and gets no ledger row.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.engine import EngineError, Stage, StageRun, git_sha, sha256_file, write_json_atomic
from pipeline.submission import append_ledger, judge_locally, validate_submission
from pipeline.tasks.profiles import Profile


def params(profile: Profile, recipe: dict) -> dict:
    return {"target": "local" if profile.demo else "kaggle", "message": recipe.get("submit", {}).get("message", "")}


def label(params: dict) -> str:
    return params["target"]


def submit_csv(profile: Profile, csv_path: Path, sample: Path, submissions_root: Path, *,
               keys: dict | None = None, dev_metric: str = "", decode_params: str = "", message: str = "") -> dict:
    """Validate, judge, copy under submissions/<competition>/, then (last) append a ledger row. Returns the scores."""
    if not profile.demo:
        raise EngineError(f"{profile.name}: Kaggle submission is not available yet; only demo competitions")
    validate_submission(csv_path, sample, profile)
    digest = sha256_file(csv_path)
    scores = judge_locally(csv_path, profile)
    keys = keys or {}
    kept = Path(submissions_root) / profile.name / f"{digest[:12]}.csv"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(csv_path, kept)
    append_ledger(submissions_root, {
        "competition": profile.name, "target": "local", "status": "scored",
        "train_key": keys.get("train", "")[:12], "decode_key": keys.get("decode", "")[:12],
        "csv_key": keys.get("csv", "")[:12], "dev_metric": dev_metric, "decode_params": decode_params,
        "public_score": f"{scores['public']:.4f}", "private_score": f"{scores['private']:.4f}",
        "csv_sha256": digest, "git_sha": git_sha() or "", "message": message,
    })
    return {**scores, "csv_sha256": digest, "copy": str(kept)}


def run(run: StageRun) -> dict:
    download = run.inputs["download"]
    sample = download.dir / download.manifest["metrics"]["sample_submission"]
    csv_path = run.inputs["csv"].dir / "submission.csv"
    decode_manifest = run.pipeline_artifacts["decode"].manifest
    metrics = decode_manifest["metrics"]
    dev_metric = metrics.get("dev_beam", metrics.get("dev_greedy", ""))
    decode_params = " ".join(f"{k}={v}" for k, v in decode_manifest["params"].items())
    result = submit_csv(run.profile, csv_path, sample, run.submissions_root, keys=run.keys,
                        dev_metric=str(dev_metric), decode_params=decode_params, message=run.params["message"])
    # the ledger row is the last side effect before the manifest and .done: nothing after it can fail but I/O
    write_json_atomic(run.out / "score.json", result)
    run.log(f"local judge ({run.profile.metric}): public {result['public']:.4f}  private {result['private']:.4f}")
    return {"public": result["public"], "private": result["private"], "csv_sha256": result["csv_sha256"]}


STAGE = Stage(name="submit", upstream=("download", "csv"), code=("pipeline.stages.submit", "pipeline.submission"),
              params=params, label=label, run=run)
