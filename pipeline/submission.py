"""Submission CSVs: validation against the competition's sample submission, the local judge, and the ledger.

Every refusal is one line naming the file and what was expected; a refused CSV never reaches the ledger.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import time
from pathlib import Path

import Levenshtein
import numpy as np

from pipeline.data.kaggle_layout import LABEL_SAMPLE, detect_label_format
from pipeline.errors import AsrpipeError
from pipeline.files import atomic_write
from pipeline.tasks.profiles import Profile

LEDGER_COLUMNS = ["time", "competition", "target", "status", "train_key", "decode_key", "csv_key", "dev_metric",
                  "decode_params", "public_score", "private_score", "csv_sha256", "git_sha", "message",
                  "kaggle_ref", "error", "predicted_public"]
# status: scored (local judge or Kaggle COMPLETE) | pending (Kaggle still scoring; `asrpipe submissions` fills it
# in) | error (Kaggle could not score it; the reason is in `error`). predicted_public: what `asrpipe rerun` predicted
# from the earlier scored rows before it submitted (empty otherwise)


class SubmissionError(AsrpipeError, ValueError):
    pass


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SubmissionError(f"{path}: cannot be read as CSV ({exc})") from None
    if header is None:
        raise SubmissionError(f"{path}: empty file (expected a header line)")
    return header, rows


def allowed_labels(profile: Profile) -> tuple[str, set[str]]:
    """('chars', alphabet) when each character must be in the alphabet, ('tokens', set) when the whole label must."""
    if profile.label_format == "chars":
        return "chars", set(profile.char_map[1:])  # blank (index 0) never appears in a prediction
    if profile.label_format == "phoneme":
        return "tokens", set(profile.symbols)
    if profile.label_format == "int":
        return "tokens", {str(i) for i in range(len(profile.symbols))}
    return "chars", {s for s in profile.symbols if len(s) == 1}


def validate_submission(path: Path, sample: Path, profile: Profile) -> list[list[str]]:
    header, rows = read_rows(path)
    sample_header, sample_rows = read_rows(sample)
    if header != sample_header:
        raise SubmissionError(f"{path}: header {','.join(header)!r}, expected {','.join(sample_header)!r} "
                              f"(from {sample.name}; Kaggle headers are case sensitive)")
    if len(rows) != len(sample_rows):
        raise SubmissionError(f"{path}: {len(rows)} rows, expected {len(sample_rows)} (one per test item)")
    for number, (row, expected) in enumerate(zip(rows, sample_rows), start=2):
        if len(row) != len(header):
            raise SubmissionError(f"{path}: line {number} has {len(row)} fields, expected {len(header)}")
        if row[0] != expected[0]:
            raise SubmissionError(f"{path}: line {number} {header[0]} {row[0]!r}, expected {expected[0]!r} "
                                  f"(ids in the sample's order)")
    if profile.family == "hw1p2":  # class ids or phoneme strings: whichever the sample submission uses
        detected = detect_label_format(sample, sample_rows[:LABEL_SAMPLE], profile)
        profile = profile.reconciled({"label_format": detected})
    mode, allowed = allowed_labels(profile)
    for number, row in enumerate(rows, start=2):
        label = row[1]
        bad = [c for c in label if c not in allowed] if mode == "chars" else ([label] if label not in allowed else [])
        if bad:
            raise SubmissionError(f"{path}: line {number} {header[1]} contains {bad[0]!r}, "
                                  f"not in the {profile.name} label alphabet")
    return rows


# ---- local judge (embedded demo competitions) ------------------------------------------------------------------

def score(metric: str, truth: list[str], predicted: list[str]) -> float:
    if metric == "levenshtein":
        return float(np.mean([Levenshtein.distance(t, p) for t, p in zip(truth, predicted)]))
    if metric == "accuracy":
        return float(np.mean([t == p for t, p in zip(truth, predicted)]) * 100.0)
    if metric == "cer":
        edits = sum(Levenshtein.distance(t, p) for t, p in zip(truth, predicted))
        return 100.0 * edits / max(1, sum(len(t) for t in truth))
    raise SubmissionError(f"unknown metric {metric!r}")


def judge_locally(path: Path, profile: Profile) -> dict[str, float]:
    """Public and private scores against the held-back solution, as Kaggle would compute them."""
    _, rows = read_rows(path)
    _, solution = read_rows(profile.embedded_solution)
    predicted = {row[0]: row[1] for row in rows}
    scores = {}
    for usage in ("Public", "Private"):
        subset = [row for row in solution if row[2] == usage]
        scores[usage.lower()] = score(profile.metric, [r[1] for r in subset], [predicted[r[0]] for r in subset])
    return scores


# ---- ledger ---------------------------------------------------------------------------------------------------

def ledger_path(submissions_root: Path) -> Path:
    return Path(submissions_root) / "ledger.csv"


@contextlib.contextmanager
def _ledger_lock(submissions_root: Path):
    """One writer at a time; a lock file beside the ledger, since rewrites replace the ledger file itself."""
    path = ledger_path(submissions_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_ledger(path: Path, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, LEDGER_COLUMNS, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write, fsync=True)


def _read_header(path: Path) -> list[str] | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, newline="") as handle:
        return next(csv.reader(handle), None)


def append_ledger(submissions_root: Path, row: dict) -> Path:
    values = {column: row.get(column, "") for column in LEDGER_COLUMNS}
    values["time"] = values["time"] or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with _ledger_lock(submissions_root) as path:
        header = _read_header(path)
        if header is not None and header != LEDGER_COLUMNS:  # a ledger from before a column was added
            _write_ledger(path, read_ledger(submissions_root))
        with open(path, "a", newline="") as handle:
            if header is None:
                csv.writer(handle).writerow(LEDGER_COLUMNS)
            csv.writer(handle).writerow([values[c] for c in LEDGER_COLUMNS])
            handle.flush()
            os.fsync(handle.fileno())
    return path


def update_ledger(submissions_root: Path, competition: str, kaggle_ref: str, changes: dict) -> bool:
    """Fill in a Kaggle row (by competition + submission ref) in place; False if there is no such row."""
    with _ledger_lock(submissions_root) as path:
        rows = read_ledger(submissions_root)
        hits = [r for r in rows if r["competition"] == competition and r.get("kaggle_ref") == str(kaggle_ref)]
        for row in hits:
            row.update({k: v for k, v in changes.items() if k in LEDGER_COLUMNS})
        if hits:
            _write_ledger(path, rows)
    return bool(hits)


def find_submitted(submissions_root: Path, competition: str, csv_sha256: str) -> dict | None:
    """The latest ledger row that submitted this exact CSV to this competition, if any."""
    rows = [r for r in read_ledger(submissions_root)
            if r["competition"] == competition and r["csv_sha256"] == csv_sha256]
    return rows[-1] if rows else None


def read_ledger(submissions_root: Path) -> list[dict]:
    path = ledger_path(submissions_root)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
