"""The download and submit stages and the `submit` / `submissions` / `leaderboard` commands against the loopback
Kaggle stand-in (tests/kaggle_standin.py) with the real kaggle client: ledger rows, the duplicate guard, dry runs,
the daily quota, Kaggle's ERROR status, pending rows filled in later, a resumed download stage."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json

import pytest
from typer.testing import CliRunner

from cli.main import app, build_pipeline
from pipeline.engine import Pipeline
from pipeline.kaggle_client import Kaggle, KaggleError
from pipeline.stages import download
from pipeline.stages.submit import submit_csv
from pipeline.submission import LEDGER_COLUMNS, SubmissionError, append_ledger, read_ledger
from tests.kaggle_replica import make_replica
from tests.kaggle_standin import Competition, KaggleStandIn

PROFILE = "hw3p2-f25"
KEYS = {"train": "a" * 64, "decode": "b" * 64, "csv": "c" * 64}


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    return dataclasses.replace(make_replica(tmp_path_factory.mktemp("replica"), PROFILE), local_data=None)


@pytest.fixture
def standin(replica, tmp_path, monkeypatch):
    monkeypatch.setattr(Kaggle, "BACKOFF", 0.0)
    monkeypatch.setattr(Kaggle, "POLL_FIRST", 0.0)
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    with KaggleStandIn({replica.slug: Competition.from_replica(replica)}) as server:
        for name, value in server.environment(tmp_path).items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.fixture
def files(replica, tmp_path):
    """The sample submission and a perfect submission (the solution's labels)."""
    with open(replica.embedded_solution, newline="") as handle:
        solution = list(csv.reader(handle))
    perfect = tmp_path / "perfect.csv"
    with open(perfect, "w", newline="") as handle:
        csv.writer(handle).writerows([row[:2] for row in solution])
    sample = tmp_path / "sample.csv"
    with open(sample, "w", newline="") as handle:
        csv.writer(handle).writerows([solution[0][:2]] + [[row[0], "-"] for row in solution[1:]])
    return sample, perfect


def submit(replica, files, root, **kwargs):
    sample, perfect = files
    return submit_csv(replica, kwargs.pop("csv", perfect), sample, root, keys=KEYS, dev_metric="3.1",
                      decode_params="beam=20 backend=asrpipe", log=lambda line: None, **kwargs)


# ---- submit ------------------------------------------------------------------------------------------------------

def test_submission_is_scored_and_recorded_with_run_keys(standin, replica, files, tmp_path):
    result = submit(replica, files, tmp_path / "submissions", message="resnet34 beam20", wait=60)
    digest = hashlib.sha256(files[1].read_bytes()).hexdigest()
    assert result["status"] == "scored" and result["public"] == "0.00000" and result["remaining"] == 4
    [row] = read_ledger(tmp_path / "submissions")
    expected = f"resnet34 beam20 | train aaaaaaaa decode bbbbbbbb | beam=20 backend=asrpipe | csv {digest[:12]}"
    assert row["message"] == expected == standin.state.submissions[0].description
    assert (row["target"], row["status"], row["public_score"], row["kaggle_ref"]) == ("kaggle", "scored", "0.00000",
                                                                                     str(result["kaggle_ref"]))
    assert row["train_key"] == "a" * 12 and row["csv_sha256"] == digest
    assert (tmp_path / "submissions" / PROFILE / f"{digest[:12]}.csv").read_bytes() == files[1].read_bytes()


def test_same_csv_again_is_refused_unless_forced(standin, replica, files, tmp_path):
    root = tmp_path / "submissions"
    submit(replica, files, root, wait=60)
    with pytest.raises(SubmissionError) as error:
        submit(replica, files, root, wait=60)
    assert "was already submitted to hw3p2-f25" in str(error.value) and "--resubmit" in str(error.value)
    assert len(standin.state.submissions) == 1 and len(read_ledger(root)) == 1
    submit(replica, files, root, wait=60, resubmit=True)
    assert len(standin.state.submissions) == 2 and [r["status"] for r in read_ledger(root)] == ["scored"] * 2


def test_dry_run_checks_everything_but_uploads_nothing(standin, replica, files, tmp_path):
    result = submit(replica, files, tmp_path / "submissions", dry_run=True, message="try")
    assert result["dry_run"] and result["remaining"] == 5 and result["description"].startswith("try | train")
    assert standin.count("GetSubmissionLimits") == 1 and standin.count("StartSubmissionUpload") == 0
    assert read_ledger(tmp_path / "submissions") == []


def test_no_submissions_left_today_is_refused(standin, replica, files, tmp_path):
    standin.state.max_daily = 0
    with pytest.raises(KaggleError, match="no submissions left .*the daily quota resets at 00:00 UTC"):
        submit(replica, files, tmp_path / "submissions", wait=60)
    assert standin.count("StartSubmissionUpload") == 0


def test_kaggle_error_status_is_surfaced_and_recorded(standin, replica, files, tmp_path):
    # the sample the CSV was checked against lags the solution Kaggle scores with (it happens): Kaggle says ERROR
    standin.state.competitions[replica.slug].solution.append(["5", "abc", "Private"])
    with pytest.raises(SubmissionError) as error:
        submit(replica, files, tmp_path / "submissions", wait=60)
    message = str(error.value)
    assert "Kaggle could not score submission 1001: Submission must have 6 rows (found 5)" in message
    [row] = read_ledger(tmp_path / "submissions")
    assert row["status"] == "error" and row["error"] == "Submission must have 6 rows (found 5)"


def test_unscored_at_timeout_stays_pending_until_submissions_fills_it_in(standin, replica, files, tmp_path):
    root = tmp_path / "submissions"
    result = submit(replica, files, root, wait=0)
    assert result["status"] == "pending" and read_ledger(root)[0]["status"] == "pending"
    out = CliRunner().invoke(app, ["submissions", "--task", PROFILE, "--submissions", str(root)])
    assert out.exit_code == 0, out.output
    [row] = read_ledger(root)
    assert row["status"] == "scored" and row["public_score"] == "0.00000"
    assert "1 pending ledger rows filled in" in out.output and "4 submissions left today" in out.output
    with open(root / PROFILE / "submissions.csv", newline="") as handle:
        listed = list(csv.DictReader(handle))
    assert [(r["ref"], r["status"], r["public"]) for r in listed] == [(row["kaggle_ref"], "COMPLETE", "0.00000")]


def test_leaderboard_shows_our_rank_and_is_saved(standin, replica, files, tmp_path):
    root = tmp_path / "submissions"
    submit(replica, files, root, wait=60)
    out = CliRunner().invoke(app, ["leaderboard", "--task", PROFILE, "--submissions", str(root), "--top", "2"])
    assert out.exit_code == 0, out.output
    assert "our rank: 1 of 4 (standin-user, 0.00000)" in out.output
    with open(root / PROFILE / "leaderboard.csv", newline="") as handle:
        assert [r["team"] for r in csv.DictReader(handle)] == ["standin-user", "top team", "runner up", "baseline"]


def test_cli_submit_of_a_given_csv_downloads_then_dry_runs_then_submits(standin, replica, files, tmp_path):
    args = ["submit", "--task", PROFILE, "--csv", str(files[1]), "--artifacts", str(tmp_path / "artifacts"),
            "--submissions", str(tmp_path / "submissions")]
    dry = CliRunner().invoke(app, [*args, "--dry-run", "-m", "first try"])
    assert dry.exit_code == 0, dry.output
    assert "valid, not in the ledger; 5 submissions left today" in dry.output and "nothing uploaded" in dry.output
    assert standin.count("DownloadDataFiles") == 1 and standin.count("StartSubmissionUpload") == 0
    real = CliRunner().invoke(app, [*args, "--wait", "60"])
    assert real.exit_code == 0, real.output
    assert "Kaggle public 0.00000" in real.output and len(standin.state.submissions) == 1
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already submitted" in again.output


def test_cli_submit_force_never_resubmits_resubmit_does(standin, replica, files, tmp_path):
    args = ["submit", "--task", PROFILE, "--csv", str(files[1]), "--artifacts", str(tmp_path / "artifacts"),
            "--submissions", str(tmp_path / "submissions"), "--wait", "60"]
    assert CliRunner().invoke(app, args).exit_code == 0
    forced = CliRunner().invoke(app, [*args, "--force"])
    assert forced.exit_code == 2 and "--resubmit submits it again" in forced.output
    assert len(standin.state.submissions) == 1 and len(read_ledger(tmp_path / "submissions")) == 1
    again = CliRunner().invoke(app, [*args, "--resubmit"])
    assert again.exit_code == 0, again.output
    assert len(standin.state.submissions) == 2 and len(read_ledger(tmp_path / "submissions")) == 2


def test_demo_leaderboard_is_refused_in_one_line(tmp_path):
    out = CliRunner().invoke(app, ["leaderboard", "--task", "demo-hw3p2", "--submissions", str(tmp_path)])
    assert out.exit_code == 2 and "demo competition has no public leaderboard" in out.output


# ---- local judge (demo competitions) keeps working, with the same duplicate guard --------------------------------

def test_demo_resubmit_is_refused_unless_forced(tmp_path):
    profile = make_replica(tmp_path / "demo", "demo-hw3p2")
    with open(profile.embedded_solution, newline="") as handle:
        rows = [row[:2] for row in csv.reader(handle)]
    perfect = tmp_path / "perfect.csv"
    with open(perfect, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    root = tmp_path / "submissions"
    assert submit_csv(profile, perfect, perfect, root)["public"] == 0.0
    with pytest.raises(SubmissionError, match="already submitted to demo-hw3p2 .*local, scored, public 0.0000"):
        submit_csv(profile, perfect, perfect, root)
    submit_csv(profile, perfect, perfect, root, resubmit=True)
    assert [r["target"] for r in read_ledger(root)] == ["local", "local"]


def test_a_ledger_from_before_the_kaggle_columns_is_upgraded(tmp_path):
    root = tmp_path / "submissions"
    root.mkdir()
    old = LEDGER_COLUMNS[: LEDGER_COLUMNS.index("message") + 1]
    with open(root / "ledger.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(old)
        writer.writerow(["2025-01-01T00:00:00", "demo-hw3p2", "local", "scored"] + [""] * (len(old) - 5) + ["old"])
    append_ledger(root, {"competition": "hw3p2-f25", "target": "kaggle", "status": "pending", "kaggle_ref": "7"})
    with open(root / "ledger.csv", newline="") as handle:
        assert next(csv.reader(handle)) == LEDGER_COLUMNS
    rows = read_ledger(root)
    assert [(r["message"], r["kaggle_ref"]) for r in rows] == [("old", ""), ("", "7")]


# ---- the download stage ------------------------------------------------------------------------------------------

def download_pipeline(replica, tmp_path):
    return Pipeline(replica, {}, [download.STAGE], artifacts_root=tmp_path / "artifacts",
                    submissions_root=tmp_path / "submissions", options={"progress": False})


def test_download_stage_fetches_from_kaggle_and_is_then_fresh(standin, replica, tmp_path):
    pipeline = download_pipeline(replica, tmp_path)
    assert pipeline.plan["download"].params["source"] == "kaggle"
    pipeline.run()
    metrics = pipeline.plan["download"].artifact.manifest["metrics"]
    assert metrics["kind"] == "kaggle"
    assert metrics["sha256"] == hashlib.sha256(replica.embedded_zip.read_bytes()).hexdigest()
    assert list(metrics["counts"].values()) == [12, 4, 5]
    again = download_pipeline(replica, tmp_path)
    assert [line.state for line in again.status()] == ["fresh"]
    again.run()
    assert standin.count("DownloadDataFiles") == 1


def test_interrupted_download_stage_resumes_its_part_file(standin, replica, tmp_path, monkeypatch):
    monkeypatch.setattr(Kaggle, "ATTEMPTS", 2)
    standin.truncate(times=4)
    pipeline = download_pipeline(replica, tmp_path)
    with pytest.raises(KaggleError, match="rerun to resume from 64.0 KB"):
        pipeline.run()
    part = pipeline.plan["download"].dir / f"{replica.slug}.zip.part"
    assert part.stat().st_size == 65536
    assert [line.state for line in pipeline.status()] == ["incomplete"]
    standin.state.faults.clear()
    pipeline.run()
    metrics = pipeline.plan["download"].artifact.manifest["metrics"]
    assert metrics["sha256"] == hashlib.sha256(replica.embedded_zip.read_bytes()).hexdigest()
    record = json.loads((pipeline.plan["download"].dir / f"{replica.slug}.zip.json").read_text())
    assert record["resumed"] and not part.exists()


def test_download_with_data_needs_no_kaggle_and_is_remembered(replica, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials-here"))
    monkeypatch.setenv("ASRPIPE_KAGGLE_ENDPOINT", "http://127.0.0.1:9")  # any Kaggle call would fail
    monkeypatch.setenv("COLUMNS", "200")
    where = ["--artifacts", str(tmp_path / "artifacts"), "--submissions", str(tmp_path / "submissions")]
    out = CliRunner().invoke(app, ["download", "--task", PROFILE, "--data", str(replica.embedded_zip), *where])
    assert out.exit_code == 0, out.output
    later = build_pipeline(PROFILE, None, None, tmp_path / "artifacts", tmp_path / "submissions")  # no --data
    assert later.status()[0].state == "fresh" and later.plan["download"].params["source"] == "local"


def test_data_kaggle_forgets_the_local_data_and_downloads_from_kaggle(standin, replica, tmp_path):
    where = ["--artifacts", str(tmp_path / "artifacts"), "--submissions", str(tmp_path / "submissions")]
    local = CliRunner().invoke(app, ["download", "--task", PROFILE, "--data", str(replica.embedded_zip), *where])
    assert local.exit_code == 0, local.output
    status = CliRunner().invoke(app, ["status", "--task", PROFILE, *where]).output
    assert f"data: local zip {replica.embedded_zip.resolve()} (remembered from --data)" in status
    assert standin.count("DownloadDataFiles") == 0
    back = CliRunner().invoke(app, ["download", "--task", PROFILE, "--data", "kaggle", *where])
    assert back.exit_code == 0, back.output
    assert standin.count("DownloadDataFiles") == 1
    assert not (tmp_path / "artifacts" / PROFILE / download.LOCAL_DATA_FILE).exists()
    status = CliRunner().invoke(app, ["status", "--task", PROFILE, *where]).output
    assert f"data: Kaggle {replica.slug}\n" in status
    later = build_pipeline(PROFILE, None, None, tmp_path / "artifacts", tmp_path / "submissions")
    assert later.plan["download"].params["source"] == "kaggle" and later.status()[0].state == "fresh"


def test_polling_that_fails_leaves_the_row_pending_not_the_stage_broken(standin, replica, files, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(Kaggle, "ATTEMPTS", 2)
    standin.fail("ListSubmissions", 503, times=2)
    result = submit(replica, files, tmp_path / "submissions", wait=60)
    assert result["status"] == "pending" and read_ledger(tmp_path / "submissions")[0]["status"] == "pending"
