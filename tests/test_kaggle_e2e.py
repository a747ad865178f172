"""`make submit TASK=hw3p2-f25 CONFIG=tiny` end to end against the loopback Kaggle stand-in: the real kaggle client
downloads a tiny replica of the competition, the pipeline trains / decodes / writes the CSV, and the submission is
uploaded, polled until scored and recorded; then `submissions` and `leaderboard`. The API key must appear in no
output and no file the run wrote. Slow (trains a tiny model); CI runs it."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.submission import read_ledger
from tests.kaggle_replica import make_replica
from tests.kaggle_standin import Competition, KaggleStandIn

REPO = Path(__file__).resolve().parent.parent
PROFILE = "hw3p2-f25"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kaggle-e2e")
    replica = dataclasses.replace(make_replica(tmp / "replica", PROFILE), local_data=None)
    with KaggleStandIn({replica.slug: Competition.from_replica(replica)}, key="e2e-secret-key-5f1a9c") as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
        env.update(server.environment(tmp), ASRPIPE_ARTIFACTS=str(tmp / "artifacts"), HOME=str(tmp / "home"),
                   ASRPIPE_SUBMISSIONS=str(tmp / "submissions"), WANDB_MODE="offline", WANDB_SILENT="true",
                   COLUMNS="200")
        yield tmp, server, env


def sh(args: list[str], env: dict, expect: int = 0) -> str:
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == expect, f"{' '.join(args)} exited {result.returncode}:\n{output[-4000:]}"
    return output


def asrpipe(*args: str, env: dict, expect: int = 0) -> str:
    return sh([str(Path(sys.executable).parent / "asrpipe"), *args], env, expect)


def make_submit(env: dict) -> str:
    return sh(["make", "submit", f"TASK={PROFILE}", "CONFIG=tiny", f"VENV={Path(sys.prefix)}"], env)


def states(output: str) -> dict[str, str]:
    return {m.group(2): m.group(1) for m in re.finditer(r"^(fresh|run|resume)\s+(\w+)", output, re.M)}


@pytest.fixture(scope="module")
def submitted(world):
    tmp, server, env = world
    return make_submit(env)


def test_make_submit_runs_every_stage_and_records_the_kaggle_score(world, submitted):
    tmp, server, env = world
    assert states(submitted) == {s: "run" for s in ("download", "normalize", "train", "select", "decode", "csv",
                                                    "submit")}
    assert server.count("DownloadDataFiles") == 1 and len(server.state.submissions) == 1
    [row] = read_ledger(tmp / "submissions")
    assert (row["competition"], row["target"], row["status"]) == (PROFILE, "kaggle", "scored")
    assert float(row["public_score"]) >= 0 and row["kaggle_ref"] == str(server.state.submissions[0].ref)
    description = server.state.submissions[0].description
    assert re.fullmatch(r"train [0-9a-f]{8} decode [0-9a-f]{8} \| beam=\d+ .* \| csv [0-9a-f]{12}", description)
    assert row["message"] == description and f"Kaggle ({'levenshtein'}): public {row['public_score']}" in submitted


def test_listings_and_a_second_make_submit(world, submitted):
    tmp, server, env = world
    listing = asrpipe("submissions", "--task", PROFILE, env=env)
    assert "COMPLETE" in listing and (tmp / "submissions" / PROFILE / "submissions.csv").exists()
    board = asrpipe("leaderboard", "--task", PROFILE, env=env)
    assert re.search(r"our rank: \d of 4 \(standin-user", board)
    again = make_submit(env)
    assert set(states(again).values()) == {"fresh"} and len(server.state.submissions) == 1
    dry = asrpipe("submit", "--task", PROFILE, "--config", "tiny", "--dry-run", env=env, expect=2)
    assert "already submitted" in dry and "--resubmit" in dry


def test_the_key_is_in_no_output_and_no_file(world, submitted):
    tmp, server, env = world
    key = server.state.key.encode()
    assert key.decode() not in submitted
    written = [p for folder in ("artifacts", "submissions") for p in (tmp / folder).rglob("*")
               if p.is_file() and not p.is_symlink()]
    assert len(written) > 20
    assert [p for p in written if key in p.read_bytes()] == []
