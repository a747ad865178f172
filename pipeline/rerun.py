"""`asrpipe rerun`: bring the pipeline up to date and submit only when that is worth a submission.

    outcome = rerun(pipeline, min_gain=0.05, reserve=2, dry_run=False, wait=600)

Under a per-competition lock (a second rerun exits at once), run the pipeline to csv (fresh stages are no-ops),
then the gate, in this order, each refusal one line that names the reason and leaves the ledger untouched:

    duplicate     the CSV's sha256 is in the ledger (or on Kaggle: a rerun killed between upload and ledger row
                  left it there, and this one adopts that submission into the ledger instead of submitting again)
    not improved  the dev metric does not beat the best submitted row's by at least min_gain (profile direction)
    quota         Kaggle's submissions left today (num_allowed_now) are not above the reserve kept for manual tries

then submit, poll and write the ledger row as `asrpipe submit` does. Every rerun appends one line to
submissions/<competition>/reruns.log. Before submitting it predicts the public score from the ledger's scored rows
(dev metric → public score, a least-squares line with its 95 % prediction interval, from 3 distinct points on).

Exit statuses (cron and systemd logs): 0 submitted, 3 skipped (the reason is printed and logged), 4 another rerun
holds the lock, 2 an error.
"""
from __future__ import annotations

import fcntl
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import AsrpipeError

SUBMITTED, SKIPPED, LOCKED = 0, 3, 4


class RerunLocked(AsrpipeError):
    """Another rerun of this competition holds the lock."""


@dataclass
class Outcome:
    decision: str                    # submitted | skipped | would-submit (dry run)
    reason: str
    status: int
    metric: float | None = None
    predicted: str = ""
    keys: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)


class lock:
    """flock on submissions/<competition>/rerun.lock, without waiting."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise RerunLocked(f"another rerun of this competition holds the lock {self.path}; nothing done") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def parse(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def predict_public(rows: list[dict], dev: float | None) -> tuple[str, float | None]:
    """(a line, the prediction) from the ledger's scored rows: public = a + b·dev, with a 95 % prediction interval."""
    import numpy as np

    points = [(parse(r["dev_metric"]), parse(r["public_score"])) for r in rows if r["status"] == "scored"]
    points = [(x, y) for x, y in points if x is not None and y is not None]
    distinct = len({x for x, _ in points})
    if dev is None or distinct < 3:
        return f"no prediction: {distinct} scored submission(s) with distinct dev metrics (3 needed)", None
    x, y = (np.array(v, dtype=float) for v in zip(*points))
    slope, intercept = np.polyfit(x, y, 1)
    n = len(x)
    residual = y - (intercept + slope * x)
    s = math.sqrt(float(residual @ residual) / max(1, n - 2))
    spread = s * math.sqrt(1 + 1 / n + (dev - x.mean()) ** 2 / float(((x - x.mean()) ** 2).sum()))
    half = t975(n - 2) * spread
    value = float(intercept + slope * dev)
    return f"predicted public {value:.4g} ± {half:.2g} (95 %, {n} scored rows)", value


T975 = [12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131]


def t975(df: int) -> float:
    """Student's t 97.5 % quantile (a 95 % two-sided interval); the normal's 1.96 from 30 degrees of freedom on."""
    if df < 1:
        return math.inf
    return T975[df - 1] if df <= len(T975) else (2.042 if df < 30 else 1.96)


def gate(profile, rows: list[dict], csv_sha256: str, dev: float | None, min_gain: float) -> str | None:
    """The first reason not to submit from the ledger alone (duplicate, not improved), or None."""
    earlier = [r for r in rows if r["csv_sha256"] == csv_sha256]
    if earlier:
        return (f"duplicate: this CSV (sha256 {csv_sha256[:12]}) was submitted at {earlier[-1]['time']} "
                f"({earlier[-1]['status']}, public {earlier[-1]['public_score'] or '-'})")
    submitted = [(parse(r["dev_metric"]), r) for r in rows if r["status"] in ("scored", "pending")]
    submitted = [(v, r) for v, r in submitted if v is not None]
    if not submitted:
        return None
    if dev is None:
        return "not improved: this run has no dev metric to compare with the submitted ones"
    sign = -1 if profile.metric_direction == "min" else 1
    best, row = max(submitted, key=lambda pair: sign * pair[0])
    gain = sign * (dev - best)
    if gain <= 0 or gain < min_gain:  # not better at all, or by less than asked
        needs = f"needs a gain of {min_gain:g}, " if min_gain > 0 else ""
        return (f"not improved: dev {dev:.4g} vs {best:.4g} submitted at {row['time']} ({needs}"
                f"{'lower' if sign < 0 else 'higher'} is better)")
    return None


def find_orphan(profile, client, csv_sha256: str, submissions_root: Path) -> dict | None:
    """A submission on Kaggle whose message names this CSV (asrpipe ends every message with `csv <sha12>`) and whose
    ref no ledger row holds: an upload whose process died before it wrote the row."""
    from pipeline.submission import read_ledger

    known = {r.get("kaggle_ref") for r in read_ledger(submissions_root) if r["competition"] == profile.name}
    tag = f"csv {csv_sha256[:12]}"
    found = [s for s in client.submissions(profile.slug)
             if s["description"].endswith(tag) and str(s["ref"]) not in known]
    return found[0] if found else None


def adopt_orphan(profile, client, csv_sha256: str, row: dict, submissions_root: Path, log) -> dict | None:
    """Write the ledger row of such an upload now, instead of submitting again; None when there is none."""
    from pipeline.stages.submit import KAGGLE_STATUS
    from pipeline.submission import append_ledger, find_submitted

    orphan = find_orphan(profile, client, csv_sha256, submissions_root)
    if orphan is None or find_submitted(submissions_root, profile.name, csv_sha256):
        return orphan  # none, or another process recorded this CSV meanwhile
    append_ledger(submissions_root, {**row, "target": "kaggle", "status": KAGGLE_STATUS.get(orphan["status"], "pending"),
                                     "kaggle_ref": str(orphan["ref"]), "message": orphan["description"],
                                     "public_score": orphan.get("public", ""),
                                     "private_score": orphan.get("private", ""), "error": orphan.get("error", "")})
    log(f"adopted Kaggle submission {orphan['ref']} of this CSV into the ledger (an earlier rerun uploaded it)")
    return orphan


def rerun(pipeline, *, min_gain: float = 0.0, reserve: int = 0, dry_run: bool = False, wait: float = 600.0,
          log=print) -> Outcome:
    from pipeline.files import sha256_file
    from pipeline.stages.submit import pipeline_inputs, submit_csv
    from pipeline.submission import read_ledger

    profile, submissions_root = pipeline.profile, pipeline.submissions_root
    with lock(submissions_root / profile.name / "rerun.lock"):
        pipeline.run(stop="csv")
        inputs = pipeline_inputs({name: p.artifact for name, p in pipeline.plan.items()})
        profile = profile.reconciled(inputs["detected"])
        digest = sha256_file(inputs["csv_path"])
        dev = parse(inputs["dev_metric"])
        keys = {name: key[:8] for name, key in inputs["keys"].items() if name in ("train", "decode", "csv")}
        rows = [r for r in read_ledger(submissions_root) if r["competition"] == profile.name]
        prediction, predicted = predict_public(rows, dev)
        outcome = Outcome("skipped", "", SKIPPED, dev, prediction, keys)
        reason = gate(profile, rows, digest, dev, min_gain)
        client = None
        if reason is None and not profile.demo:
            from pipeline.kaggle_client import Kaggle

            client = Kaggle(log=log)
            row = {"competition": profile.name, "train_key": inputs["keys"].get("train", "")[:12],
                   "decode_key": inputs["keys"].get("decode", "")[:12], "csv_key": inputs["keys"].get("csv", "")[:12],
                   "dev_metric": inputs["dev_metric"], "decode_params": inputs["decode_params"],
                   "csv_sha256": digest}
            if dry_run and find_orphan(profile, client, digest, submissions_root):
                reason = "duplicate: an earlier rerun uploaded this CSV (a real rerun adopts it into the ledger)"
            elif not dry_run and adopt_orphan(profile, client, digest, row, submissions_root, log):
                reason = "duplicate: an earlier rerun uploaded this CSV; its submission is now in the ledger"
            if reason is None:
                quota = client.limits(profile.slug)
                if quota["remaining"] <= reserve:
                    reason = (f"quota: {quota['remaining']} submission(s) left today, {reserve} kept in reserve "
                              f"(the quota resets at 00:00 UTC)")
        if reason is not None:
            outcome.reason = reason
        elif dry_run:
            outcome.decision, outcome.reason, outcome.status = "would-submit", f"dev {dev}", SKIPPED
        else:
            message = pipeline.plan["submit"].params.get("message", "")
            result = submit_csv(profile, inputs["csv_path"], inputs["sample"], submissions_root, keys=inputs["keys"],
                                dev_metric=inputs["dev_metric"], decode_params=inputs["decode_params"],
                                message=message, wait=wait, kaggle=client, log=log, predicted_public=predicted)
            outcome.decision, outcome.status, outcome.result = "submitted", SUBMITTED, result
            public = result.get("public")
            outcome.reason = (f"public {public:.4f}" if isinstance(public, float) else f"public {public}" if public
                              else f"status {result['status']}")
        write_log(submissions_root / profile.name / "reruns.log", outcome)
    return outcome


def write_log(path: Path, outcome: Outcome) -> None:
    """One line per rerun: time (UTC), decision, reason, keys, dev metric, prediction. Nothing secret."""
    keys = " ".join(f"{k}={v}" for k, v in outcome.keys.items())
    line = "\t".join([time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), outcome.decision, outcome.reason, keys,
                      f"dev={outcome.metric}", outcome.predicted])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(line.replace("\n", " ") + "\n")


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 5:
            rows.append({"time": parts[0], "decision": parts[1], "reason": parts[2], "keys": parts[3],
                         "dev": parse(parts[4].removeprefix("dev=")), "predicted": parts[5] if len(parts) > 5 else ""})
    return rows
