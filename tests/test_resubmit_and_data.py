"""`--force` recomputes but never re-submits (`--resubmit` does); `status` writes nothing; `--data kaggle` forgets a
remembered `--data`, and `status` says where the data comes from. On the embedded demo-hw3p2 competition with its
local judge: the real download and submit stages, and two stand-in stages instead of train / decode / csv (no
training: the CSV is the solution itself)."""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from pipeline.engine import Stage, StageRun
from pipeline.stages import download, submit
from pipeline.stages.download import LOCAL_DATA_FILE
from pipeline.submission import read_ledger
from pipeline.tasks.profiles import PROFILES

TASK = "demo-hw3p2"
PROFILE = PROFILES[TASK]


def fake_decode(run: StageRun) -> dict:
    return {"dev_greedy": 1.0}


def fake_csv(run: StageRun) -> dict:
    """The perfect submission (the solution's labels), the same bytes every time."""
    with open(PROFILE.embedded_solution, newline="") as handle:
        rows = [row[:2] for row in csv.reader(handle)]
    with open(run.out / "submission.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return {"rows": len(rows) - 1}


def stand_in(name: str, upstream: tuple[str, ...], run) -> Stage:
    return Stage(name=name, upstream=upstream, params=lambda profile, recipe: {},
                 label=lambda params: name, run=run)


STAGES = [download.STAGE, stand_in("decode", ("download",), fake_decode),
          stand_in("csv", ("download", "decode"), fake_csv), submit.STAGE]


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.tasks.stages_for", lambda family: list(STAGES))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("ASRPIPE_KAGGLE_ENDPOINT", "http://127.0.0.1:9")  # any Kaggle call would fail
    return tmp_path / "artifacts", tmp_path / "submissions"


def asrpipe(roots, *args: str, expect: int = 0) -> str:
    artifacts, submissions = roots
    out = CliRunner().invoke(app, [*args, "--artifacts", str(artifacts), "--submissions", str(submissions)])
    assert out.exit_code == expect, out.output
    return out.output


def states(output: str) -> dict[str, str]:
    return {m.group(2): m.group(1) for m in re.finditer(r"^(fresh|run|resume)\s+(\w+)", output, re.M)}


def ledger(roots) -> list[dict]:
    return read_ledger(roots[1])


# ---- --force never re-submits; --resubmit does -------------------------------------------------------------------

def test_run_force_recomputes_but_does_not_resubmit(roots):
    assert states(asrpipe(roots, "run", "--task", TASK)) == dict.fromkeys(("download", "decode", "csv", "submit"),
                                                                          "run")
    assert len(ledger(roots)) == 1
    forced = asrpipe(roots, "run", "--task", TASK, "--force")
    assert states(forced)["decode"] == "run" and states(forced)["csv"] == "run"
    assert len(ledger(roots)) == 1, "run --force re-submitted an unchanged CSV"
    assert "not submitted again" in forced and "--resubmit" in forced
    status = asrpipe(roots, "status", "--task", TASK)
    assert "stale" not in status and "missing" not in status and "incomplete" not in status


def test_forced_submit_stage_alone_stays_as_it_is(roots):
    asrpipe(roots, "run", "--task", TASK)
    done = next((roots[0] / TASK / "submit").glob("local-*/.done"))
    before = done.read_text()
    for args in (["run", "--only", "submit", "--force"], ["run", "--from", "submit", "--force"]):
        assert states(asrpipe(roots, *args, "--task", TASK)) == {"submit": "fresh"}
    assert done.read_text() == before and len(ledger(roots)) == 1
    asrpipe(roots, "submit", "--task", TASK, "--force")
    assert len(ledger(roots)) == 1, "submit --force re-submitted an unchanged CSV"


def test_resubmit_submits_the_same_csv_again(roots):
    asrpipe(roots, "run", "--task", TASK)
    again = asrpipe(roots, "run", "--task", TASK, "--resubmit")
    assert states(again) == {"download": "fresh", "decode": "fresh", "csv": "fresh", "submit": "run"}
    asrpipe(roots, "submit", "--task", TASK, "--resubmit")
    rows = ledger(roots)
    assert len(rows) == 3 and len({r["csv_sha256"] for r in rows}) == 1
    assert [r["status"] for r in rows] == ["scored"] * 3


def test_submit_of_a_given_csv_force_refuses_resubmit_submits(roots, tmp_path):
    perfect = tmp_path / "perfect.csv"
    with open(PROFILE.embedded_solution, newline="") as handle:
        rows = [row[:2] for row in csv.reader(handle)]
    with open(perfect, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    asrpipe(roots, "submit", "--task", TASK, "--csv", str(perfect))
    refused = asrpipe(roots, "submit", "--task", TASK, "--csv", str(perfect), "--force", expect=2)
    assert "already submitted" in refused and "--resubmit submits it again" in refused
    assert len(ledger(roots)) == 1
    asrpipe(roots, "submit", "--task", TASK, "--csv", str(perfect), "--resubmit")
    assert len(ledger(roots)) == 2


@pytest.mark.parametrize("command", ["run", "submit"])
def test_help_says_force_does_not_resubmit(command):
    text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    assert "--resubmit" in text and re.search(r"--force\s.*never\s+re-\s*submits", text, re.S)


# ---- status is read-only -----------------------------------------------------------------------------------------

def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_symlink(), p.lstat().st_mtime_ns, None if p.is_dir() or p.is_symlink()
                                       else p.read_bytes())
            for p in [root, *root.rglob("*")]}


def test_status_writes_nothing(roots):
    artifacts, submissions = roots
    asrpipe(roots, "download", "--task", TASK, "--data", str(PROFILE.embedded_zip))
    assert (artifacts / TASK / LOCAL_DATA_FILE).exists()
    for path in [artifacts, *artifacts.rglob("*")]:  # an old mtime: a rewrite shows even on a coarse clock
        os.utime(path, ns=(10**18, 10**18), follow_symlinks=False)
    before = snapshot(artifacts)
    asrpipe(roots, "status", "--task", TASK)
    assert snapshot(artifacts) == before and not submissions.exists()


# ---- --data kaggle; status names the data source -----------------------------------------------------------------

def test_data_kaggle_forgets_the_local_data(roots):
    artifacts, _ = roots
    remembered = artifacts / TASK / LOCAL_DATA_FILE
    asrpipe(roots, "download", "--task", TASK, "--data", str(PROFILE.embedded_zip))
    assert json.loads(remembered.read_text())["path"] == str(PROFILE.embedded_zip.resolve())
    assert f"data: local zip {PROFILE.embedded_zip.resolve()} (remembered from --data)" in \
        asrpipe(roots, "status", "--task", TASK)
    back = asrpipe(roots, "download", "--task", TASK, "--data", "kaggle")
    assert not remembered.exists() and states(back) == {"download": "run"}
    assert re.search(r"download/embedded-[0-9a-f]{8}", back)
    status = asrpipe(roots, "status", "--task", TASK)
    assert "data: embedded demo zip" in status and "local zip" not in status
    assert re.search(r"download\s+│\s+fresh", status)


def test_status_names_a_local_folder(roots, tmp_path):
    import zipfile

    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(PROFILE.embedded_zip) as archive:
        archive.extractall(folder)
    asrpipe(roots, "download", "--task", TASK, "--data", str(folder))
    assert f"data: local folder {folder.resolve()} (remembered from --data)" in asrpipe(roots, "status", "--task", TASK)


def test_data_kaggle_without_a_slug_is_refused_and_keeps_the_choice(roots, tmp_path):
    nameless = next(p for p in PROFILES.values() if not p.demo and not p.slug)
    remembered = roots[0] / nameless.name / LOCAL_DATA_FILE
    remembered.parent.mkdir(parents=True)
    remembered.write_text(json.dumps({"path": str(tmp_path)}) + "\n")
    out = asrpipe(roots, "download", "--task", nameless.name, "--data", "kaggle", expect=2)
    assert "no known Kaggle slug" in out and remembered.exists()
