"""submit: score the CSV and record it in `submissions/ledger.csv`.

Demo competitions are judged locally against their held-back solution (ledger target "local"); real ones go to
Kaggle through pipeline/kaggle_client.py: daily quota checked, uploaded with a message naming the run keys and
decode params, a "pending" ledger row written at once, then polled until scored ("scored" with the public score,
or "error" with Kaggle's reason; still pending at the timeout: `asrpipe submissions` fills it in later).
A CSV that fails validation is refused with one line and gets no ledger row; so is a CSV whose sha256 the ledger
already holds for this competition, unless re-submitted on purpose (`--resubmit`, options["resubmit"]). The stage
itself, run again on such a CSV (`--force`, or an upstream recomputed to the same bytes), records the earlier ledger
row instead of failing or submitting again.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Callable

from pipeline.engine import Stage, StageRun, git_sha
from pipeline.files import atomic_write, sha256_file, write_json_atomic
from pipeline.submission import (SubmissionError, append_ledger, find_submitted, judge_locally, update_ledger,
                                 validate_submission)
from pipeline.tasks.profiles import Profile

KAGGLE_STATUS = {"COMPLETE": "scored", "ERROR": "error", "PENDING": "pending"}
MESSAGE_LIMIT = 400


def params(profile: Profile, recipe: dict) -> dict:
    return {"target": "local" if profile.demo else "kaggle", "message": recipe.get("submit", {}).get("message", "")}


def label(params: dict) -> str:
    return params["target"]


def submit_csv(profile: Profile, csv_path: Path, sample: Path, submissions_root: Path, *,
               keys: dict | None = None, dev_metric: str = "", decode_params: str = "", message: str = "",
               resubmit: bool = False, dry_run: bool = False, wait: float = 600.0, kaggle=None,
               log: Callable[[str], None] = print, predicted_public: float | None = None) -> dict:
    """Validate; refuse a CSV already in the ledger (unless resubmit); then judge locally (demo competitions) or
    submit to Kaggle. dry_run: every check (quota included) but no judging/upload and no ledger row."""
    validate_submission(csv_path, sample, profile)
    digest = sha256_file(csv_path)
    earlier = find_submitted(submissions_root, profile.name, digest)
    if earlier and not resubmit:
        scored = f", public {earlier['public_score']}" if earlier.get("public_score") else ""
        raise SubmissionError(f"{csv_path}: this CSV (sha256 {digest[:12]}…) was already submitted to {profile.name} "
                              f"at {earlier['time']} ({earlier['target']}, {earlier['status']}{scored}); "
                              f"--resubmit submits it again")
    keys = keys or {}
    row = {"competition": profile.name, "train_key": keys.get("train", "")[:12],
           "decode_key": keys.get("decode", "")[:12], "csv_key": keys.get("csv", "")[:12], "dev_metric": dev_metric,
           "decode_params": decode_params, "csv_sha256": digest, "git_sha": git_sha() or "", "message": message,
           "predicted_public": f"{predicted_public:.4g}" if predicted_public is not None else ""}
    if not profile.demo:
        return submit_to_kaggle(profile, csv_path, submissions_root, row, dry_run=dry_run, wait=wait,
                                kaggle=kaggle, log=log)
    if dry_run:
        return {"dry_run": True, "target": "local", "csv_sha256": digest}
    scores = judge_locally(csv_path, profile)
    kept = keep_copy(csv_path, submissions_root, profile, digest)
    append_ledger(submissions_root, {**row, "target": "local", "status": "scored",
                                     "public_score": f"{scores['public']:.4f}",
                                     "private_score": f"{scores['private']:.4f}"})
    return {**scores, "target": "local", "status": "scored", "csv_sha256": digest, "copy": str(kept)}


def keep_copy(csv_path: Path, submissions_root: Path, profile: Profile, digest: str) -> Path:
    kept = Path(submissions_root) / profile.name / f"{digest[:12]}.csv"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(csv_path, kept)
    return kept


def kaggle_message(message: str, row: dict) -> str:
    """What Kaggle shows next to the score: the user's words, the run keys, the decode params, the CSV hash."""
    runs = " ".join(f"{name} {row[f'{name}_key'][:8]}" for name in ("train", "decode") if row.get(f"{name}_key"))
    tail = f"csv {row['csv_sha256'][:12]}"
    parts = [p for p in (message.strip(), runs, row.get("decode_params", "")) if p]
    text = " | ".join(parts + [tail])
    if len(text) > MESSAGE_LIMIT:  # keep the CSV hash: it identifies the submission
        text = text[: MESSAGE_LIMIT - len(tail) - 4].rstrip() + "… | " + tail
    return text


def submit_to_kaggle(profile: Profile, csv_path: Path, submissions_root: Path, row: dict, *, dry_run: bool,
                     wait: float, kaggle, log: Callable[[str], None]) -> dict:
    from pipeline.kaggle_client import Kaggle, KaggleError

    if not profile.slug:
        raise SubmissionError(f"{profile.name}: no known Kaggle slug, so asrpipe cannot submit {csv_path}; upload it "
                              f"in the browser")
    client = kaggle or Kaggle(log=log)
    quota = client.limits(profile.slug)
    if quota["remaining"] <= 0:
        why = "the lifetime cap is reached" if quota["limited_by_total"] else "the daily quota resets at 00:00 UTC"
        raise KaggleError(f"{profile.slug}: no submissions left ({quota['today']} made today; {why})")
    description = kaggle_message(row["message"], row)
    if dry_run:
        return {"dry_run": True, "target": "kaggle", "remaining": quota["remaining"], "description": description,
                "csv_sha256": row["csv_sha256"]}
    ref = client.submit(profile.slug, csv_path, description)
    kept = keep_copy(csv_path, submissions_root, profile, row["csv_sha256"])
    # a pending row at once: if this process dies while polling, `asrpipe submissions` still finds and fills it
    append_ledger(submissions_root, {**row, "target": "kaggle", "status": "pending", "kaggle_ref": str(ref),
                                     "message": description})
    log(f"submitted to {profile.slug} as {ref} ({quota['remaining'] - 1} left today); waiting for the score")
    try:
        found = client.poll(profile.slug, ref, timeout=wait)
    except KaggleError as exc:  # submitted all the same: the pending row is right, and the stage is done
        log(f"could not poll for the score ({exc})")
        found = {"ref": ref, "status": "PENDING"}
    status = KAGGLE_STATUS.get(found["status"], "pending")
    update_ledger(submissions_root, profile.name, str(ref), {
        "status": status, "public_score": found.get("public", ""), "private_score": found.get("private", ""),
        "error": found.get("error", "")})
    if status == "error":
        raise SubmissionError(f"{csv_path}: Kaggle could not score submission {ref}: "
                              f"{found.get('error') or 'no reason given'} (ledger row marked error)")
    return {"target": "kaggle", "status": status, "kaggle_ref": ref, "public": found.get("public") or None,
            "private": found.get("private") or None, "csv_sha256": row["csv_sha256"], "copy": str(kept),
            "remaining": quota["remaining"] - 1, "description": description}


def pipeline_inputs(artifacts: dict) -> dict:
    """What a submission of the pipeline's CSV needs, from the download / csv / decode artifacts by stage name."""
    download = artifacts["download"]
    facts = download.manifest["metrics"]
    decode_manifest = artifacts["decode"].manifest
    metrics = decode_manifest["metrics"]
    dev_metric = metrics.get("dev_beam", metrics.get("dev_greedy", metrics.get("dev_acc", "")))
    return {"csv_path": artifacts["csv"].dir / "submission.csv", "sample": download.dir / facts["sample_submission"],
            "detected": facts.get("detected"), "keys": {name: a.key for name, a in artifacts.items()},
            "dev_metric": str(dev_metric),
            "decode_params": " ".join(f"{k}={v}" for k, v in decode_manifest["params"].items())}


def run(run: StageRun) -> dict:
    inputs = pipeline_inputs(run.pipeline_artifacts)
    resubmit = run.options.get("resubmit", False)
    earlier = None if resubmit else find_submitted(run.submissions_root, run.profile.name,
                                                   sha256_file(inputs["csv_path"]))
    if earlier:  # recomputing never re-submits: keep the submission the ledger already holds
        run.log(f"this CSV (sha256 {earlier['csv_sha256'][:12]}…) was already submitted at {earlier['time']} "
                f"({earlier['target']}, {earlier['status']}, public {earlier['public_score'] or '-'}); not submitted "
                f"again (--resubmit submits it again)")
        result = {"target": earlier["target"], "status": earlier["status"], "public": earlier["public_score"] or None,
                  "private": earlier["private_score"] or None, "kaggle_ref": earlier.get("kaggle_ref") or None,
                  "csv_sha256": earlier["csv_sha256"], "submitted_at": earlier["time"]}
        write_json_atomic(run.out / "score.json", result)
        return result
    result = submit_csv(run.profile.reconciled(inputs["detected"]), inputs["csv_path"], inputs["sample"],
                        run.submissions_root, keys=inputs["keys"], dev_metric=inputs["dev_metric"],
                        decode_params=inputs["decode_params"], message=run.params["message"],
                        resubmit=resubmit, wait=run.options.get("wait", 600.0),
                        log=run.log)
    # the ledger row is the last side effect before the manifest and .done: nothing after it can fail but I/O
    write_json_atomic(run.out / "score.json", result)
    if result["target"] == "local":
        run.log(f"local judge ({run.profile.metric}): public {result['public']:.4f}  private {result['private']:.4f}")
    elif result["status"] == "pending":
        run.log(f"Kaggle has not scored submission {result['kaggle_ref']} yet; `asrpipe submissions --task "
                f"{run.profile.name}` fills in the ledger row later")
    else:
        run.log(f"Kaggle ({run.profile.metric}): public {result['public']}  (submission {result['kaggle_ref']}, "
                f"{result['remaining']} left today)")
    return {key: result.get(key) for key in ("target", "status", "public", "private", "kaggle_ref", "csv_sha256")}


def refresh_pending(profile: Profile, found: list[dict], submissions_root: Path) -> int:
    """Fill in the ledger's pending Kaggle rows from a fresh submissions listing; returns how many changed."""
    from pipeline.submission import read_ledger

    by_ref = {str(s["ref"]): s for s in found}
    changed = 0
    for row in read_ledger(submissions_root):
        current = by_ref.get(row.get("kaggle_ref") or "")
        if row["competition"] != profile.name or row["status"] != "pending" or current is None:
            continue
        status = KAGGLE_STATUS.get(current["status"], "pending")
        if status != "pending":
            changed += update_ledger(submissions_root, profile.name, row["kaggle_ref"], {
                "status": status, "public_score": current["public"], "private_score": current["private"],
                "error": current["error"]})
    return changed


def write_rows_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """A listing (submissions, leaderboard) saved next to the ledger, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)


STAGE = Stage(name="submit", upstream=("download", "csv"), params=params, label=label, run=run, spends=True)
