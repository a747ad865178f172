"""`asrpipe rerun`, `schedule` and `history`: the gate (duplicate, not improved, quota) with real pipeline runs on the
demo's local judge and on a Kaggle replica behind the loopback stand-in with the real kaggle client; the lock; a
rerun SIGKILLed between upload and ledger row; the predicted public score; systemd units checked by
systemd-analyze; the history table and PNG."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.build import build_pipeline
from pipeline.rerun import SKIPPED, SUBMITTED, gate, predict_public, read_log, rerun
from pipeline.submission import LEDGER_COLUMNS, append_ledger, read_ledger
from pipeline.tasks.profiles import resolve_profile

REPO = Path(__file__).resolve().parent.parent
QUICK = ["--config", "tiny", "--set", "train.quick=0.25"]


def asrpipe(*args: str, cwd: Path, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled",
                                            "OMP_NUM_THREADS": "1", **(env or {})})
    if check and done.returncode != 0:
        raise AssertionError(done.stdout + done.stderr)
    return done


# ---- the gate and the prediction --------------------------------------------------------------------------------

def row(dev, public="", status="scored", sha="x" * 64, time_="2026-12-01T00:10:00+0000"):
    return {"dev_metric": str(dev), "public_score": str(public), "status": status, "csv_sha256": sha, "time": time_}


@pytest.mark.parametrize("task, dev, gain, refused", [
    ("hw3p2", 5.0, 0.0, False), ("hw3p2", 6.0, 0.0, True), ("hw3p2", 5.9, 0.05, False), ("hw3p2", 5.98, 0.05, True),
    ("hw1p2", 80.0, 0.0, False), ("hw1p2", 79.0, 0.0, True), ("hw1p2", 80.0, 0.5, True),
])
def test_the_gate_follows_the_metric_direction_and_the_minimum_gain(task, dev, gain, refused):
    profile = resolve_profile(task)
    best = 6.0 if profile.metric_direction == "min" else 79.6
    rows = [row(best, sha="a" * 64), row(best + (3 if profile.metric_direction == "min" else -3), sha="b" * 64),
            row(1.0 if profile.metric_direction == "min" else 99.0, status="error", sha="c" * 64)]  # never scored
    reason = gate(profile, rows, "d" * 64, dev, gain)
    assert (reason is not None) == refused
    if refused:
        assert reason.startswith("not improved") and f"{best:.4g}" in reason
    assert gate(profile, rows, "a" * 64, dev, gain).startswith("duplicate")
    assert gate(profile, [], "d" * 64, dev, gain) is None


def test_the_public_score_is_predicted_from_three_scored_rows_on():
    rows = [row(d, 0.5 * d + 1, sha=str(d)) for d in (2.0, 4.0)]
    line, value = predict_public(rows, 6.0)
    assert value is None and "2 scored submission(s)" in line
    rows.append(row(8.0, 5.0 + 0.2, sha="8"))
    line, value = predict_public(rows + [row(9.0, 7.0, status="pending", sha="9")], 6.0)
    assert value == pytest.approx(0.55 * 6.0 + 0.8, abs=0.2) and line.startswith("predicted public")
    assert "±" in line and "3 scored rows" in line


# ---- the demo path: the local judge -------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_session_of_reruns_on_the_demo_and_its_history(tmp_path):
    bad = [*QUICK, "--set", "train.lr=1e-7"]
    first = asrpipe("rerun", "--task", "demo-hw3p2", *bad, cwd=tmp_path)
    assert first.returncode == SUBMITTED, first.stdout + first.stderr
    assert first.stdout.strip().splitlines()[-1].startswith("submitted: public")
    better = asrpipe("rerun", "--task", "demo-hw3p2", *QUICK, cwd=tmp_path)
    assert better.returncode == SUBMITTED and "submitted: public" in better.stdout
    again = asrpipe("rerun", "--task", "demo-hw3p2", *QUICK, cwd=tmp_path)
    assert again.returncode == SKIPPED and "skipped: duplicate: this CSV" in again.stdout
    worse = asrpipe("rerun", "--task", "demo-hw3p2", *bad, "--set", "train.seed=5", cwd=tmp_path)
    assert worse.returncode == SKIPPED and "skipped: not improved: dev" in worse.stdout
    dry = asrpipe("rerun", "--task", "demo-hw3p2", *QUICK, "--dry-run", cwd=tmp_path)
    assert dry.returncode == SKIPPED

    rows = read_ledger(tmp_path / "submissions")
    assert [r["target"] for r in rows] == ["local", "local"]
    log = read_log(tmp_path / "submissions" / "demo-hw3p2" / "reruns.log")
    assert [r["decision"] for r in log] == ["submitted", "submitted", "skipped", "skipped", "skipped"]
    assert log[3]["reason"].startswith("not improved") and "train=" in log[3]["keys"]

    shown = asrpipe("history", "--task", "demo-hw3p2", cwd=tmp_path)
    assert shown.returncode == 0 and "rerun skipped" in shown.stdout and "submitted (scored)" in shown.stdout
    png = tmp_path / "submissions" / "demo-hw3p2" / "history.png"
    assert f"plot: {png.relative_to(tmp_path)}" in shown.stdout and png.stat().st_size > 10_000


@pytest.mark.slow
def test_two_reruns_started_together_submit_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "cli.main", "rerun", "--task", "demo-hw3p2", *QUICK],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                                   "WANDB_MODE": "disabled"}) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 4], outputs
    locked = next(err for (out, err), p in zip(outputs, procs) if p.returncode == 4)
    assert "another rerun of this competition holds the lock" in locked and len(locked.strip().splitlines()) == 1
    assert len(read_ledger(tmp_path / "submissions")) == 1


# ---- the Kaggle path: the stand-in ---------------------------------------------------------------------------------

# the replica competition behind the loopback stand-in, as the submit tests set it up
from tests.test_kaggle_submit import PROFILE, replica, standin  # noqa: E402,F401


def kaggle_pipeline(tmp_path, *sets):
    pipeline = build_pipeline(PROFILE, "tiny", list(sets), tmp_path / "artifacts", tmp_path / "submissions",
                              wandb="off", progress=False)
    pipeline.run(stop="csv")
    return pipeline


def earlier_row(tmp_path, dev: str):
    append_ledger(tmp_path / "submissions", {"competition": PROFILE, "target": "kaggle", "status": "scored",
                                             "dev_metric": dev, "public_score": "9.0", "csv_sha256": "e" * 64,
                                             "kaggle_ref": "1"})


def test_kaggle_improved_is_submitted_and_scored_not_improved_uploads_nothing(standin, tmp_path):
    pipeline = kaggle_pipeline(tmp_path)
    earlier_row(tmp_path, "0.5")  # a better run was submitted before
    skipped = rerun(pipeline, wait=30, log=lambda line: None)
    assert skipped.status == SKIPPED and skipped.reason.startswith("not improved")
    assert standin.count("StartSubmissionUpload") == 0 and standin.count("GetSubmissionLimits") == 0
    (tmp_path / "submissions" / "ledger.csv").unlink()
    earlier_row(tmp_path, "99.0")  # now only a worse run was submitted before
    done = rerun(pipeline, min_gain=1.0, wait=30, log=lambda line: None)
    assert done.status == SUBMITTED and done.result["status"] == "scored"
    assert standin.count("CreateSubmission") == 1
    row = read_ledger(tmp_path / "submissions")[-1]
    assert row["kaggle_ref"] == str(done.result["kaggle_ref"]) and row["status"] == "scored"
    again = rerun(pipeline, wait=30, log=lambda line: None)
    assert again.status == SKIPPED and again.reason.startswith("duplicate")
    assert standin.count("CreateSubmission") == 1


def test_kaggle_quota_at_the_reserve_is_skipped(standin, tmp_path):
    pipeline = kaggle_pipeline(tmp_path)
    skipped = rerun(pipeline, reserve=5, wait=30, log=lambda line: None)
    assert skipped.status == SKIPPED and skipped.reason.startswith("quota: 5 submission(s) left today, 5 kept")
    assert standin.count("CreateSubmission") == 0 and read_ledger(tmp_path / "submissions") == []
    assert rerun(pipeline, reserve=4, wait=30, log=lambda line: None).status == SUBMITTED
    log = read_log(tmp_path / "submissions" / PROFILE / "reruns.log")
    assert [r["decision"] for r in log] == ["skipped", "submitted"]
    assert "0123456789abcdef" not in (tmp_path / "submissions" / PROFILE / "reruns.log").read_text()  # no key


@pytest.mark.slow
def test_a_rerun_killed_between_upload_and_ledger_row_is_adopted_not_resubmitted(standin, tmp_path):
    pipeline = kaggle_pipeline(tmp_path)
    standin.stall("CreateSubmission", 60)
    env = {name: os.environ[name] for name in ("ASRPIPE_KAGGLE_ENDPOINT", "KAGGLE_CONFIG_DIR", "HOME")}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "rerun", "--task", PROFILE, "--config", "tiny",
                             "--artifacts", str(tmp_path / "artifacts"), "--submissions", str(tmp_path / "submissions")],
                            cwd=REPO, env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not standin.state.submissions and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert standin.state.submissions, "the rerun never uploaded"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_ledger(tmp_path / "submissions") == []  # uploaded, no ledger row: the window this test is about

    outcome = rerun(pipeline, wait=30, log=lambda line: None)
    assert outcome.status == SKIPPED and "earlier rerun uploaded this CSV" in outcome.reason
    assert standin.count("CreateSubmission") == 1
    [adopted] = read_ledger(tmp_path / "submissions")
    assert adopted["kaggle_ref"] == str(standin.state.submissions[0].ref)
    with open(tmp_path / "submissions" / "ledger.csv", newline="") as handle:
        assert next(csv.reader(handle)) == LEDGER_COLUMNS


# ---- schedule -----------------------------------------------------------------------------------------------------

def test_schedule_writes_units_systemd_accepts_and_a_cron_line_where_no_user_bus(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = asrpipe("schedule", "install", "--task", "demo-hw3p2", "--at", "00:10", "--min-gain", "0.05",
                   "--reserve", "2", "--config", str(tmp_path / "best.yaml"), "--set", 'submit.message="100% auto $run"',
                   cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    units = tmp_path / "config" / "systemd" / "user"
    timer, service = units / "asrpipe-rerun-demo-hw3p2.timer", units / "asrpipe-rerun-demo-hw3p2.service"
    assert "OnCalendar=*-*-* 00:10:00 UTC" in timer.read_text() and "Persistent=true" in timer.read_text()
    text = service.read_text()
    assert f"--submissions {tmp_path / 'submissions'}" in text and "--min-gain 0.05 --reserve 2" in text
    assert f"--config {tmp_path / 'best.yaml'}" in text and "SuccessExitStatus=3 4" in text
    assert '--set "submit.message=\\"100%% auto $$run\\""' in text  # systemd's quoting, specifiers, variables
    executable = text.split("ExecStart=", 1)[1].split()[0]
    assert Path(executable).is_absolute() and os.access(executable, os.X_OK)
    if "systemctl --user does not work here" in done.stdout:  # containers: the cron line instead
        assert "# 00:10 UTC, in this machine's local time" in done.stdout and "flock -n" in done.stdout
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze missing: `make test` installs Debian's systemd")
        pytest.skip("systemd-analyze not installed")
    verified = subprocess.run([analyze, "verify", str(timer), str(service)], capture_output=True, text=True)
    assert verified.returncode == 0 and str(units) not in verified.stdout + verified.stderr, verified.stderr
    listed = asrpipe("schedule", "list", cwd=tmp_path, env=env)
    assert "asrpipe-rerun-demo-hw3p2.timer  *-*-* 00:10:00 UTC" in listed.stdout
    removed = asrpipe("schedule", "remove", "--task", "demo-hw3p2", cwd=tmp_path, env=env)
    assert removed.returncode == 0 and not timer.exists() and not service.exists()
    bad = asrpipe("schedule", "install", "--task", "demo-hw3p2", "--at", "25:00", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "--at 25:00: expected HH:MM" in bad.stderr
